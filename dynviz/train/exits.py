"""Calibrating confidence exits: a temperature per exit, then exit thresholds.

Temperature scaling (Guo et al., ICML 2017) fits one scalar T_k per exit by
minimising the negative log-likelihood of softmax(z_k / T_k) on held-out data.

Thresholds τ are then chosen on the same data, where the mean cost is

    E[FLOPs] = Σ_k p(exit = k) · cumulative FLOPs to exit k,

in one of two ways. With a few hundred images (the photo cascades), the least
E[FLOPs] under a bound on the *harm rate*: the share of inputs the last exit
classifies correctly but the early-exiting model gets wrong. There a bound on
raw accuracy rewards noise (an early stage can look "better" than the last one
by luck); harm counts only what exiting early broke. With thousands (the CIFAR
multi-exit networks), the highest accuracy within each FLOPs budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

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


THRESHOLD_GRID = tuple(i / 200 for i in range(200)) + (NEVER,)
"""The values a searched τ_k takes: steps of 0.005, and never."""
PRICES = (0.0, *torch.logspace(-3, 1, 41).tolist())
"""The prices λ of FLOPs (accuracy given up per the whole path's FLOPs) the budget search walks up."""


def budgeted_thresholds(
    confidences: torch.Tensor, correct: torch.Tensor, cumulative_flops: torch.Tensor, budgets: tuple[float, ...]
) -> dict[float, tuple[float, ...]]:
    """Budgeted batch classification (MSDNet, Huang et al., ICLR 2018, §4): per budget (in the unit of
    ``cumulative_flops``), the thresholds of highest held-out accuracy whose mean FLOPs stay within it, of
    those :func:`threshold_candidates` tries. Budgets no setting meets, and those whose best is a cheaper
    budget's, are left out.

    The paper fixes the exit shares to a geometric schedule q_k ∝ p^k and fits thresholds to them; searching
    instead gains about 0.8 pt on DVT's test images at half the ViT's FLOPs (docs/early-exit.md)."""
    tried, accuracy, flops = threshold_candidates(confidences, correct, cumulative_flops)
    budgeted, best_so_far = {}, -1.0
    for budget in sorted(budgets):
        within = flops <= budget
        if not within.any():
            continue
        most_accurate = within & (accuracy == accuracy[within].max())
        index = int(torch.where(most_accurate, flops, torch.inf).argmin())
        if float(accuracy[index]) > best_so_far:
            budgeted[budget], best_so_far = tried[index], float(accuracy[index])
    return budgeted


def threshold_candidates(
    confidences: torch.Tensor, correct: torch.Tensor, cumulative_flops: torch.Tensor
) -> tuple[list[tuple[float, ...]], torch.Tensor, torch.Tensor]:
    """Threshold settings near the accuracy–FLOPs frontier, with their accuracy and mean FLOPs.

    Coordinate ascent on accuracy − λ·FLOPs, one τ_k at a time over :data:`THRESHOLD_GRID`, for every price λ
    of :data:`PRICES` in turn (each starting where the cheaper price ended); every setting it tries is a
    candidate. Its cost grows linearly with the number of exits, where an exhaustive grid's grows
    exponentially; on DVT's three exits it finds the exhaustive grid's best at every budget."""
    exits, count = confidences.shape
    grid = torch.tensor(THRESHOLD_GRID, dtype=confidences.dtype)
    columns = torch.arange(count)
    tried, accuracies, flops = [], [], []
    thresholds = [NEVER] * (exits - 1)
    for price in PRICES:
        improved = True
        while improved:
            improved = False
            for k in range(exits - 1):
                # Inputs that do not leave at exit k leave where the other thresholds send them.
                elsewhere = exit_index(confidences, tuple(thresholds[:k] + [NEVER] + thresholds[k + 1 :]))
                leaves_at_k = (elsewhere > k) & (confidences[k] >= grid[:, None]) & (grid[:, None] < NEVER)
                exits_taken = torch.where(leaves_at_k, k, elsewhere)  # [grid, inputs]
                tried += [(*thresholds[:k], t, *thresholds[k + 1 :]) for t in THRESHOLD_GRID]
                accuracies.append(correct[exits_taken, columns].float().mean(1))
                flops.append(cumulative_flops[exits_taken].mean(1))
                gain = accuracies[-1] - price * flops[-1] / cumulative_flops[-1]
                best, current = int(gain.argmax()), THRESHOLD_GRID.index(thresholds[k])
                if gain[best] > gain[current] + 1e-9:
                    thresholds[k], improved = THRESHOLD_GRID[best], True
    return tried, torch.cat(accuracies), torch.cat(flops)


HARM_CAPS = (0.0, 0.004, 0.01, 0.02, 0.04, 0.08)
"""The harm rates a calibrated model offers an operating point for."""


def harm_point(cap: float) -> str:
    return f"harm ≤ {100 * cap:.1f}%"


def calibrated_confidences(
    exit_logits: list[torch.Tensor], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One temperature per exit, fitted on labelled held-out logits; then, per exit and input ([exits, inputs]),
    the calibrated top-1 confidence and whether that answer is right: what thresholds are searched on."""
    temperatures = torch.tensor([fit_temperature(z, labels) for z in exit_logits])
    probabilities = [(z / t).softmax(-1) for z, t in zip(exit_logits, temperatures)]
    confidences = torch.stack([p.max(-1).values for p in probabilities])
    correct = torch.stack([p.argmax(-1) == labels for p in probabilities])
    return temperatures, confidences, correct


def cumulative_flops(exit_flops: Iterable[float]) -> torch.Tensor:
    """What reaching each exit costs, from what each exit costs beyond the one before."""
    return torch.tensor(list(itertools.accumulate(exit_flops)), dtype=torch.float64)


def calibrate_exits(
    exit_logits: list[torch.Tensor], labels: torch.Tensor, exit_flops: list[float], caps: tuple[float, ...] = HARM_CAPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """One temperature per exit, then one row of thresholds per harm cap (:func:`search_thresholds`), from every
    exit's logits on labelled held-out images and what each exit costs beyond the one before."""
    temperatures, confidences, correct = calibrated_confidences(exit_logits, labels)
    cumulative = cumulative_flops(exit_flops)
    thresholds = torch.tensor([search_thresholds(confidences, correct, cumulative, cap) for cap in caps])
    return temperatures, thresholds
