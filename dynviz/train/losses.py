"""Losses as reusable pieces: exits, distillation.

Multi-exit networks are trained on the weighted sum of their exits' losses
(MSDNet, Huang et al., ICLR 2018, §4):

    L = Σ_k w_k · CE(z_k, y).

Every cross-entropy on labels is label-smoothed (Szegedy et al., CVPR 2016):
the target puts 1 − ε on the label and ε/K on every class, ε =
:data:`LABEL_SMOOTHING`, which keeps logits from growing without bound and
calibrates the confidences that exits and thresholds later read.

Knowledge distillation (Hinton et al., 2015) lets a cheap student match a
teacher's softened distribution; applied from a network's last exit to its
earlier ones it is the in-place distillation of IMTA (Li et al., ICCV 2019):

    KD(z_s, z_t) = T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)).

Gated networks add ConvNet-AIG's target-rate loss (Veit & Belongie, ECCV 2018,
§3.3), which pulls the execution rate of every gate l, averaged over the batch
(and its channels), towards a target t:

    L_rate = (1 / L) Σ_l (ḡ_l − t)².

Pixel masks use DynConv's sparsity criterion instead (Verelst & Tuytelaars,
CVPR 2020, §3.3): the share of the whole network's maskable FLOPs spent is
pulled to t, so blocks may learn different densities, while each block's share
f̄_l is kept within bounds that start at t and open over the first third of
training (progress p ∈ [0, 1], a = cos²(π/2 · min(1, 3p))):

    L_net = (Σ_l c_l f̄_l / Σ_l c_l − t)²,
    L_block = (1 / L) Σ_l max(0, f̄_l − (1 − a(1 − t)))² + max(0, a·t − f̄_l)².
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

LABEL_SMOOTHING = 0.1


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)


def exit_losses(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, weights: Sequence[float] | None = None
) -> torch.Tensor:
    weights = weights or [1.0] * len(logits)
    return sum(w * smoothed_cross_entropy(z, labels) for w, z in zip(weights, logits))


def distillation_per_input(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """KD(z_s, z_t) of each input, [N]. The teacher is detached: only the student learns from this term."""
    log_student = F.log_softmax(student / temperature, -1)
    log_teacher = F.log_softmax(teacher.detach() / temperature, -1)
    return temperature**2 * F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(-1)


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """KD(z_s, z_t), the mean over the batch."""
    return distillation_per_input(student, teacher, temperature).mean()


def teacher_matching(logits: Sequence[torch.Tensor], teacher: torch.Tensor) -> torch.Tensor:
    """Distillation as function matching (Beyer et al., CVPR 2022): every exit of the student matches the
    teacher's distribution on the very same augmented view, at temperature 1."""
    return sum(distillation(z, teacher, temperature=1.0) for z in logits)


def self_distilled_exit_losses(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """Every exit learns from the labels; the early ones also from the last exit (IMTA)."""
    *early, last = logits
    return smoothed_cross_entropy(last, labels) + sum(
        (1 - alpha) * smoothed_cross_entropy(z, labels) + alpha * distillation(z, last) for z in early
    )


def execution_rate_loss(gates: Sequence[torch.Tensor], target: float) -> torch.Tensor:
    return torch.stack([(g.float().mean() - target) ** 2 for g in gates]).mean()


ANNEALED_FRACTION = 1 / 3
"""DynConv's per-block bounds open over this share of training."""


def sparsity_criterion(
    shares: Sequence[torch.Tensor], costs: Sequence[float], target: float, progress: float
) -> torch.Tensor:
    """L_net + L_block of the module docstring; ``shares`` f_l [N] per block, ``costs`` c_l, ``progress`` p."""
    spent = torch.stack([f.float().mean() for f in shares])
    weights = torch.tensor(costs, dtype=spent.dtype, device=spent.device)
    network = ((spent * weights).sum() / weights.sum() - target) ** 2
    annealing = math.cos(math.pi / 2 * min(1.0, progress / ANNEALED_FRACTION)) ** 2
    upper, lower = 1 - annealing * (1 - target), annealing * target
    blocks = ((spent - upper).clamp(min=0) ** 2 + (lower - spent).clamp(min=0) ** 2).mean()
    return network + blocks
