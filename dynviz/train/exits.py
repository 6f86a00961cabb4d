"""Calibrating confidence exits: a temperature per exit, then exit thresholds.

Temperature scaling (Guo et al., ICML 2017) fits one scalar T_k per exit by
minimising the negative log-likelihood of softmax(z_k / T_k) on held-out data.

Thresholds τ are then chosen on the same data to minimise the mean cost

    E[FLOPs] = Σ_k p(exit = k) · cumulative FLOPs to exit k

subject to a bound on the *harm rate*: the share of inputs the last exit
classifies correctly but the early-exiting model gets wrong. On a few hundred
images a bound on raw accuracy rewards noise (an early stage can look "better"
than the last one by luck); harm counts only what exiting early broke.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from dynviz.models.base import NEVER


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    # Plain tensors, also where they were made in inference mode (autograd cannot save those).
    logits, labels = logits.detach().clone(), labels.clone()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def exit_index(confidences: torch.Tensor, thresholds: tuple[float, ...]) -> torch.Tensor:
    """Per input, the first exit k with confidence ≥ τ_k (τ_k < 1); the last exit when none is."""
    exits, last = confidences.shape[0], confidences.shape[0] - 1
    tau = torch.tensor(thresholds, dtype=confidences.dtype).unsqueeze(1)
    passes = (confidences[:last] >= tau) & (tau < NEVER)
    passes = torch.cat([passes, torch.ones_like(passes[:1])])
    return passes.float().argmax(0) if exits > 1 else torch.zeros(confidences.shape[1], dtype=torch.long)


SEARCHED_COMBINATIONS = 50_000


def search_thresholds(
    confidences: torch.Tensor,
    correct: torch.Tensor,
    cumulative_flops: torch.Tensor,
    harm_cap: float,
    grid: torch.Tensor | None = None,
) -> tuple[float, ...]:
    """The thresholds (one per early exit) of least mean FLOPs whose harm rate is ≤ ``harm_cap``.

    ``confidences`` and ``correct`` are [exits, inputs]; ``cumulative_flops`` is [exits]. The search is
    exhaustive over a grid of τ per exit: 201 values for up to two early exits, fewer for more, so that it
    stays within :data:`SEARCHED_COMBINATIONS`."""
    if grid is None:
        per_exit = min(201, round(SEARCHED_COMBINATIONS ** (1 / max(1, confidences.shape[0] - 1))))
        grid = torch.linspace(0.0, 1.0, per_exit)
    choices = sorted({*grid.tolist(), NEVER})
    columns = torch.arange(confidences.shape[1])
    harmed_by = correct[-1] & ~correct  # [exits, inputs]: last exit right, exit k wrong
    best, best_flops = (NEVER,) * (confidences.shape[0] - 1), float(cumulative_flops[-1])
    for thresholds in itertools.product(choices, repeat=confidences.shape[0] - 1):
        exits = exit_index(confidences, thresholds)
        flops = float(cumulative_flops[exits].mean())
        if flops < best_flops and float(harmed_by[exits, columns].float().mean()) <= harm_cap:
            best, best_flops = thresholds, flops
    return best


def budgeted_thresholds(confidences: torch.Tensor, base: float) -> tuple[float, ...]:
    """Budgeted batch classification (MSDNet, Huang et al., ICLR 2018, §4): thresholds under which exit k
    takes a share q_k ∝ base^k of the held-out inputs ([exits, inputs] ``confidences``), fitted exit by
    exit on the inputs still left. base < 1 sends most inputs out early (a small budget), base > 1 late.

    Thresholds are rounded down to 3 decimals (what a slider shows) and kept below 1 (which means never)."""
    exits, count = confidences.shape
    shares = base ** torch.arange(1, exits + 1, dtype=torch.float64)
    shares /= shares.sum()
    remaining = torch.ones(count, dtype=torch.bool)
    thresholds = []
    for k in range(exits - 1):
        wanted = int(round(float(shares[k]) * count))
        candidates = confidences[k][remaining].sort(descending=True).values
        if wanted == 0 or len(candidates) == 0:
            thresholds.append(NEVER)
            continue
        threshold = min(math.floor(float(candidates[min(wanted, len(candidates)) - 1]) * 1000) / 1000, 0.999)
        thresholds.append(threshold)
        remaining &= confidences[k] < threshold
    return tuple(thresholds)


HARM_CAPS = (0.0, 0.004, 0.01, 0.02, 0.04, 0.08)
"""The harm rates a calibrated model offers an operating point for."""


def harm_point(cap: float) -> str:
    return f"harm ≤ {100 * cap:.1f}%"


def calibrate_exits(
    exit_logits: list[torch.Tensor], labels: torch.Tensor, exit_flops: list[float], caps: tuple[float, ...] = HARM_CAPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """One temperature per exit, then one row of thresholds per harm cap (:func:`search_thresholds`), from every
    exit's logits on labelled held-out images and what each exit costs beyond the one before."""
    temperatures = torch.tensor([fit_temperature(z, labels) for z in exit_logits])
    probabilities = [(z / t).softmax(-1) for z, t in zip(exit_logits, temperatures)]
    confidences = torch.stack([p.max(-1).values for p in probabilities])
    correct = torch.stack([p.argmax(-1) == labels for p in probabilities])
    cumulative = torch.tensor(list(itertools.accumulate(exit_flops)), dtype=torch.float64)
    thresholds = torch.tensor([search_thresholds(confidences, correct, cumulative, cap) for cap in caps])
    return temperatures, thresholds
