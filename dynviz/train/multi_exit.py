"""Recipe for the CIFAR multi-exit networks (``msdnet_cifar``, ``ranet_cifar``): joint training of all
exits, then budgeted calibration.

1. Train every exit at once on the shared CIFAR schedule: the last exit on the
   labels, the earlier ones on the labels and on the last exit's softened
   output (:func:`dynviz.train.losses.self_distilled_exit_losses`).
   Where a recipe names a ``teacher`` (the trained static ResNets' ensemble,
   :func:`dynviz.train.cifar.static_ensemble`), every exit then matches it on
   each augmented view for a fine-tune's epochs
   (:func:`dynviz.train.losses.teacher_matching`): a network whose last exit
   has stopped improving on the labels still learns from a teacher that is
   better than any one of its members.
2. On the 5,000 held-out validation images: one temperature per exit, then the
   exit thresholds of highest accuracy within each of a range of FLOPs budgets
   (:func:`dynviz.train.exits.budgeted_thresholds`), plus the anytime points that
   force every input out at one exit.
3. The default operating point is the cheapest budget whose validation accuracy
   is within 0.5 pt of the best single exit's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import torch
from torch import nn

from dynviz.cards import ModelCard, anytime_point
from dynviz.models.base import forced_exit
from dynviz.models.multi_exit import CalibratedExits
from dynviz.train.cifar import (
    fine_tune_schedule,
    prepare,
    save_weights,
    train_on_cifar,
    validation_metadata,
)
from dynviz.train.exits import (
    budgeted_thresholds,
    calibrated_confidences,
    cumulative_flops,
    exit_index,
)
from dynviz.train.loop import TrainOptions, predict
from dynviz.train.losses import self_distilled_exit_losses, teacher_matching

BUDGETS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5)
"""Mean FLOPs as shares of the static network's (a cascade of transformers may spend more)."""
DEFAULT_TOLERANCE = 0.005


def budget_name(budget: float) -> str:
    return f"budget: ≤ {100 * budget:.0f}% of static"


DISTILLATION_EPOCHS = 12
"""The ensemble stage: a fine-tune's length, as the gated networks' first fine-tune had."""


def train(
    classifier: type[CalibratedExits], options: TrainOptions, teacher: Callable[[], nn.Module] | None = None
) -> ModelCard:
    """``teacher``: builds the trained network that every exit matches after the joint training."""
    name = classifier.name
    config = classifier.config()
    net = classifier.network(config)
    history, validation = train_on_cifar(name, net, self_distilled_exit_losses, options)
    if teacher is not None:
        schedule = fine_tune_schedule(options, DISTILLATION_EPOCHS)
        distilled, _ = train_on_cifar(name, net, teacher_matching, options, None, schedule, teacher(), "distilled")
        history += distilled
    logits = predict(net, validation, prepare)
    temperatures, confidences, correct = calibrated_confidences(logits, validation.labels)
    anytime = {anytime_point(k): forced_exit(config.exits, k) for k in range(config.exits)}
    model = classifier(net, temperatures, anytime, anytime_point(config.exits - 1))  # for its exits' FLOPs
    cumulative = cumulative_flops(p.flops for p in model.exit_parts)
    budgeted = budgeted_thresholds(confidences, correct, cumulative / model.flops_full, BUDGETS)
    points = anytime | {budget_name(budget): thresholds for budget, thresholds in budgeted.items()}
    columns = torch.arange(confidences.shape[1])

    def on_validation(thresholds: tuple[float, ...]) -> tuple[float, float]:
        exits = exit_index(confidences, thresholds)
        return float(correct[exits, columns].float().mean()), float(cumulative[exits].mean())

    best_exit = max(on_validation(points[anytime_point(k)])[0] for k in range(config.exits))
    budgets = [budget_name(budget) for budget in budgeted]
    acceptable = [p for p in budgets if on_validation(points[p])[0] >= best_exit - DEFAULT_TOLERANCE]
    default = min(acceptable or budgets[-1:], key=lambda p: on_validation(points[p])[1])
    names = list(points)
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors |= {"temperatures": temperatures, "thresholds": torch.tensor([points[p] for p in names])}
    metadata = validation_metadata(history) | {
        "config": json.dumps(dataclasses.asdict(config)),
        "operating_points": json.dumps(names),
        "validation": json.dumps({p: on_validation(points[p]) for p in names}),
    }
    return save_weights(name, tensors, classifier.about, model.flops_full, default, metadata)
