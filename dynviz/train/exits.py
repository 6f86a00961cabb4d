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

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
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
    """Per input, the first exit k with confidence ≥ τ_k; the last exit when none is."""
    exits, last = confidences.shape[0], confidences.shape[0] - 1
    passes = confidences[:last] >= torch.tensor(thresholds).unsqueeze(1)
    passes = torch.cat([passes, torch.ones_like(passes[:1])])
    return passes.float().argmax(0) if exits > 1 else torch.zeros(confidences.shape[1], dtype=torch.long)


def search_thresholds(
    confidences: torch.Tensor,
    correct: torch.Tensor,
    cumulative_flops: torch.Tensor,
    harm_cap: float,
    grid: torch.Tensor | None = None,
) -> tuple[float, ...]:
    """The thresholds (one per early exit) of least mean FLOPs whose harm rate is ≤ ``harm_cap``.

    ``confidences`` and ``correct`` are [exits, inputs]; ``cumulative_flops`` is [exits]."""
    grid = torch.linspace(0.0, 1.0, 201) if grid is None else grid
    never = float(grid.max()) + 1e-6  # above every confidence: this exit is never taken
    choices = [*grid.tolist(), never]
    columns = torch.arange(confidences.shape[1])
    harmed_by = correct[-1] & ~correct  # [exits, inputs]: last exit right, exit k wrong
    best, best_flops = (never,) * (confidences.shape[0] - 1), float(cumulative_flops[-1])
    for thresholds in itertools.product(choices, repeat=confidences.shape[0] - 1):
        exits = exit_index(confidences, thresholds)
        flops = float(cumulative_flops[exits].mean())
        if flops < best_flops and float(harmed_by[exits, columns].float().mean()) <= harm_cap:
            best, best_flops = thresholds, flops
    return best
