"""Recipe for ``gfnet_lite0``: GFNet's classifiers and policy, distilled from Lite0 on photos.

Every gradient step learns from unlabelled photos (Lite0 at 224 px labels each
one); the labelled calib halves only measure and calibrate.

1. **Features.** Per photo, once: the focus network's pooled features of every
   candidate patch, Lite0's logits at 224 px, and the glance's feature map;
   cached in chunks under the checkpoints folder (a stopped run resumes).
2. **Classifiers, then policy** (GFNet's first two stages). The classifiers
   learn on candidates drawn at random, for every focus step t,

       L = Σ_t KL(softmax(z_teacher) ‖ softmax(z_t)),

   starting as the average of the glance's and the patches' logits and pulled
   toward that start (L2-SP, Li et al., ICML 2018). Then, with the classifiers
   fixed, the policy learns where to look: GFNet rewards its PPO policy for the
   gain of each step's fused prediction; here every candidate's outcome is in
   the cache, so at each step the policy's target is a softmax over the
   candidates' −KL (:func:`train_steps`), and it goes on from the one it chose.
3. **Calibration.** The model as served, on the labelled calib images: one
   temperature per policy and step, then per FLOPs budget the thresholds of
   highest accuracy (:func:`dynviz.train.exits.budgeted_thresholds`).

GFNet trains its glance and focus networks on ImageNet, and its policy on
continuous patch centres. Lite0 fine-tuned here at 128 px, by matching Lite0
at 224 px on 6,700 photos for an epoch, fell from 64% to 57% on the held-out
labelled images (its BatchNorm statistics re-estimated at 128 px: 47%); Lite0
as published serves in both roles.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cards import ModelCard, anytime_point
from dynviz.data import training_photos
from dynviz.inputs import load_image_file
from dynviz.models.base import forced_exit
from dynviz.models.efficientnet_lite import efficientnet_lite
from dynviz.models.gfnet import (
    GLANCE_RESOLUTION,
    MAX_FOCUS_STEPS,
    NATIVE,
    PATCH,
    POLICIES,
    FusedClassifiers,
    GlanceAndFocus,
    GlanceFocusPoint,
    RecurrentPolicy,
    candidate_corners,
    policy_name,
)
from dynviz.progress import progress
from dynviz.train.cifar import checkpoint_path, save_weights
from dynviz.train.distill import WEIGHT_PULL, central_view, photo_squares, stack
from dynviz.train.exits import budgeted_thresholds, calibrated_confidences, cumulative_flops, exit_index
from dynviz.train.loop import CHECKPOINTS, TensorSet, TrainOptions, calibration_files, replaced_atomically
from dynviz.train.losses import distillation_per_input, teacher_matching
from dynviz.train.multi_exit import budget_name

HEAD_EPOCHS = 10
HEAD_LR = 1e-3
VALUE_TEMPERATURE = 0.1
"""How sharply the policy's target prefers the best candidates (KL differences between candidates are ~0.1–1)."""
HEAD_BATCH = 128
CHUNK = 256
"""Photos per cached chunk of features."""
VALIDATION_IMAGES = 600
"""Labelled calib images whose features are cached to follow the classifiers' training."""
BUDGETS = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)
"""Mean FLOPs as shares of Lite0's at 224 px."""
DEFAULT_BUDGET = 0.6
"""The default operating point: the most accurate on the calib images, of either policy, within this share."""


def glance_input(views: torch.Tensor) -> torch.Tensor:
    """224 px views → the glance's input (anti-aliased, as the served model's bicubic resize)."""
    size = (GLANCE_RESOLUTION,) * 2
    return F.interpolate(views, size=size, mode="bilinear", antialias=True, align_corners=False)


@dataclass(frozen=True)
class Features:
    """What the classifiers and the policy learn from, per photo (in half precision)."""

    glance_map: torch.Tensor
    """[N, 1280, g, g]: the glance's last feature map."""
    patches: torch.Tensor
    """[N, candidates, 1280]: the focus network's pooled features of every candidate patch."""
    teacher: torch.Tensor
    """[N, 1000]: Lite0's logits at 224 px."""

    def __len__(self) -> int:
        return len(self.teacher)

    def part(self, index: torch.Tensor) -> Features:
        return Features(self.glance_map[index].float(), self.patches[index].float(), self.teacher[index].float())


@torch.inference_mode()
def glance_features(squares: torch.Tensor, net: nn.Module) -> dict[str, torch.Tensor]:
    return {"glance_map": net.features(glance_input(central_view(squares))).half()}


@torch.inference_mode()
def focus_features(squares: torch.Tensor, net: nn.Module) -> dict[str, torch.Tensor]:
    views = central_view(squares)
    offsets = candidate_corners(NATIVE)
    crops = [views[..., y : y + PATCH, x : x + PATCH] for y in offsets for x in offsets]
    patches = torch.stack([net.features(crop).mean((2, 3)) for crop in crops], 1)
    return {"patches": patches.half(), "teacher": net(views).half()}


def cached(name: str, squares: torch.Tensor, compute: Callable, resume: bool) -> tuple[dict[str, torch.Tensor], float]:
    """``compute`` on every square, a chunk at a time, each chunk saved with the seconds it took as it is done
    (and, resuming, read back instead of computed). Chunks are known by their position alone: a run over other
    photos starts without ``--resume``. Returns the tensors, concatenated, and the seconds that the chunks read
    back took when they were computed."""
    folder = CHECKPOINTS / f"{GlanceAndFocus.name}_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    chunks, earlier = [], 0.0
    starts = range(0, len(squares), CHUNK)
    for first in progress(starts, len(starts), name):
        path = folder / f"{first:06d}.pt"
        if resume and path.exists():
            chunk = torch.load(path, weights_only=True)
            earlier += float(chunk.pop("seconds", 0.0))
        else:
            start = time.perf_counter()
            chunk = compute(squares[first : first + CHUNK].contiguous(memory_format=torch.channels_last))
            with replaced_atomically(path) as partial:
                torch.save(chunk | {"seconds": torch.tensor(time.perf_counter() - start)}, partial)
        chunks.append(chunk)
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}, earlier


def features(name: str, squares: torch.Tensor, net: nn.Module, resume: bool) -> tuple[Features, float]:
    """The cached features of ``squares`` (the glance's apart, so that another glance resolution reuses the
    patches), and the seconds the chunks read back had taken."""
    net.to(memory_format=torch.channels_last)  # the faster layout for Lite0 on this CPU (about 30% at 128 px)
    glance, glance_seconds = cached(
        f"{name}_glance{GLANCE_RESOLUTION}", squares, lambda s: glance_features(s, net), resume
    )
    focus, focus_seconds = cached(name, squares, lambda s: focus_features(s, net), resume)
    return Features(glance["glance_map"], focus["patches"], focus["teacher"]), glance_seconds + focus_seconds


class FocusSteps(nn.Module):
    """The focus steps on cached features: which candidate each step looks at, and the fused logits after it."""

    def __init__(self, fused: FusedClassifiers, policy: RecurrentPolicy):
        super().__init__()
        self.fused, self.policy = fused, policy

    def forward(self, features: Features, order: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Logits after each focus step, looking at the candidates in ``order`` ([N, steps]) where given, else
        where the policy chooses, as served."""
        return self.walk(features, order)[0]

    def walk(
        self, features: Features, order: torch.Tensor | None = None, policy_loss: Callable | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`forward`, also summing ``policy_loss(scores, seen, looked)`` over the steps the policy chose."""
        n = len(features)
        state = self.policy.start(features.glance_map) if order is None else None
        seen = [features.glance_map.mean((2, 3))]
        looked = torch.zeros(features.patches.shape[:2], dtype=torch.bool)
        logits, loss = [], torch.zeros(())
        for t in range(len(self.fused.after_step)):
            if order is None:
                scores = self.policy(state).masked_fill(looked, float("-inf"))
                if policy_loss is not None:
                    loss = loss + policy_loss(scores, seen, looked)
                chosen = scores.argmax(-1)
            else:
                chosen = order[:, t]
            pooled = features.patches[torch.arange(n), chosen]
            seen.append(pooled)
            logits.append(self.fused(seen))
            looked = looked.scatter(1, chosen[:, None], True)
            if order is None:
                state = self.policy.see(state, pooled)
        return logits, loss


def run_epochs(
    parameters: list[nn.Parameter],
    loss_of: Callable[[Features, torch.Generator], torch.Tensor],
    train: Features,
    evaluate: Callable[[], list[float]],
    stage: str,
) -> list[float]:
    """:data:`HEAD_EPOCHS` passes of Adam under a one-cycle schedule; returns ``evaluate()`` after the last."""
    optimizer = torch.optim.Adam(parameters, lr=HEAD_LR)
    batches = (len(train) + HEAD_BATCH - 1) // HEAD_BATCH
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, HEAD_LR, total_steps=HEAD_EPOCHS * batches)
    generator = torch.Generator().manual_seed(0)
    accuracy: list[float] = []
    for epoch in range(HEAD_EPOCHS):
        for index in torch.randperm(len(train), generator=generator).split(HEAD_BATCH):
            loss = loss_of(train.part(index), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            accuracy = evaluate()
        print(f"{stage}, epoch {epoch + 1}: validation accuracy per focus step {accuracy}", file=sys.stderr)
    return accuracy


def train_steps(steps: FocusSteps, train: Features, validation: Features, labels: torch.Tensor) -> dict[str, list]:
    """GFNet's stages on cached features. 1: the classifiers, on candidates drawn at random (each image's own
    order, no repeats), toward the teacher, held near their start (L2-SP). 2: the classifiers fixed, the policy,
    toward the candidates whose fused prediction comes closest to the teacher's: at each step its target is
    softmax(−KL_c / :data:`VALUE_TEMPERATURE`) over the candidates c not yet seen (GFNet rewards its PPO policy
    for the gain in the fused prediction; here every candidate's gain is known). Returns each stage's accuracy
    per focus step on ``validation``."""
    fused, policy = steps.fused, steps.policy
    candidates = train.patches.shape[1]
    start = [p.detach().clone() for p in fused.parameters()]
    whole = validation.part(torch.arange(len(validation)))

    def accuracy(order: torch.Tensor | None = None) -> list[float]:
        return [round(float((z.argmax(-1) == labels).float().mean()), 4) for z in steps(whole, order)]

    def on_random_candidates(batch: Features, generator: torch.Generator) -> torch.Tensor:
        order = torch.rand(len(batch), candidates, generator=generator).argsort(-1)
        loss = teacher_matching(steps(batch, order), batch.teacher)
        return loss + WEIGHT_PULL / 2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(fused.parameters(), start))

    random_order = torch.rand(len(validation), candidates, generator=torch.Generator().manual_seed(1)).argsort(-1)
    classifiers = run_epochs(
        list(fused.parameters()), on_random_candidates, train, lambda: accuracy(random_order), "classifiers"
    )
    fused.requires_grad_(False)

    def toward_best_candidates(batch: Features, generator: torch.Generator) -> torch.Tensor:
        def cross_entropy(scores: torch.Tensor, seen: list[torch.Tensor], looked: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                values = torch.stack(
                    [distillation_per_input(fused([*seen, p]), batch.teacher, 1.0) for p in batch.patches.unbind(1)], 1
                )
                target = (-values / VALUE_TEMPERATURE).masked_fill(looked, float("-inf")).softmax(-1)
            return -(target * scores.masked_fill(looked, -1e4).log_softmax(-1)).sum(-1).mean()

        return steps.walk(batch, policy_loss=cross_entropy)[1]

    chosen = run_epochs(list(policy.parameters()), toward_best_candidates, train, accuracy, "policy")
    return {"classifiers_random_patches": classifiers, "policy": chosen}


@torch.inference_mode()
def step_logits(model: GlanceAndFocus, paths: list[Path]) -> list[list[torch.Tensor]]:
    """[policy][step] → logits [N, classes] of the model as served, every step run on every image."""
    logits = [[[] for _ in range(model.steps + 1)] for _ in POLICIES]
    for path in progress(paths, len(paths), "every step of both policies on the calib images"):
        image, memo = load_image_file(path), {}
        for policy in range(len(POLICIES)):
            for k in range(model.steps + 1):
                logits[policy][k].append(model.step(image, policy, k, memo).logits)
    return [[torch.stack(rows) for rows in per_policy] for per_policy in logits]


@dataclass(frozen=True)
class Calibration:
    temperatures: torch.Tensor
    """[policies, steps + 1]."""
    points: dict[str, GlanceFocusPoint]
    default: str
    measured: dict[str, tuple[float, float]]
    """Each point's accuracy and mean FLOPs (a share of Lite0's) on the calib images."""


def calibrate(model: GlanceAndFocus, paths: list[Path], labels: torch.Tensor) -> Calibration:
    """Temperatures per policy and step, and the operating points: anytime and budgeted, per policy."""
    temperatures, points, measured = [], {}, {}
    columns = torch.arange(len(labels))
    for policy, per_step in enumerate(step_logits(model, paths)):
        temperature, confidences, correct = calibrated_confidences(per_step, labels)
        temperatures.append(temperature)
        parts = [model.glance_flops, *model.step_flops[policy]]
        cumulative = cumulative_flops(parts) / model.flops_full
        named = {anytime_point(k): forced_exit(model.steps + 1, k) for k in range(model.steps + 1)}
        named |= {budget_name(b): t for b, t in budgeted_thresholds(confidences, correct, cumulative, BUDGETS).items()}
        for name, thresholds in named.items():
            exits = exit_index(confidences, thresholds)
            full = f"{policy_name(policy)}, {name}"
            points[full] = GlanceFocusPoint(policy, thresholds)
            measured[full] = (float(correct[exits, columns].float().mean()), float(cumulative[exits].mean()))
    within = {name: m for name, m in measured.items() if m[1] <= DEFAULT_BUDGET}
    default = max(within or measured, key=lambda name: (within or measured)[name][0])
    return Calibration(torch.stack(temperatures), points, default, measured)


def train(options: TrainOptions) -> ModelCard:
    """The recipe; its time, with what the cached features it read back took to compute, goes where the train
    command reads a recipe's time (:func:`dynviz.train.loop.trained_seconds`)."""
    start = time.perf_counter()
    keys = GlanceAndFocus.class_keys()
    labelled = calibration_files(options, keys)
    held_out = {item.path for item in labelled}
    photos = [p for p in training_photos(list(options.photos), keys) if p not in held_out]
    if not photos:
        raise SystemExit("this recipe learns from unlabelled photos: pass --photos FOLDER")
    squares = stack(photo_squares(photos))
    print(f"{len(squares)} photos, {len(labelled)} labelled calib images", file=sys.stderr)
    validation_items = labelled[:: max(1, len(labelled) // VALIDATION_IMAGES)][:VALIDATION_IMAGES]
    validation = TensorSet(
        stack(photo_squares([item.path for item in validation_items])),
        torch.tensor([item.label for item in validation_items]),
    )

    net = efficientnet_lite("lite0")
    train_features, photos_seconds = features("photos", squares, net, options.resume)
    validation_features, validation_seconds = features("validation", validation.images, net, options.resume)

    fused = FusedClassifiers.averaging(net.classifier, net.classifier)
    torch.manual_seed(0)  # the policy's initial weights
    policy = RecurrentPolicy()
    stages = train_steps(FocusSteps(fused, policy), train_features, validation_features, validation.labels)

    fused.eval().requires_grad_(False)
    policy.eval().requires_grad_(False)
    ones = torch.ones(len(POLICIES), MAX_FOCUS_STEPS + 1)
    uncalibrated = {"uncalibrated": GlanceFocusPoint(1, (1.0,) * MAX_FOCUS_STEPS)}
    model = GlanceAndFocus(
        net.to(memory_format=torch.contiguous_format), fused, policy, ones, uncalibrated, "uncalibrated"
    )
    calibration = calibrate(model, [item.path for item in labelled], torch.tensor([item.label for item in labelled]))
    points = calibration.points
    names = list(points)
    tensors = {f"fused.{k}": v.half() for k, v in fused.state_dict().items()}
    tensors |= {f"policy.{k}": v for k, v in policy.state_dict().items()}
    tensors |= {
        "temperatures": calibration.temperatures,
        "thresholds": torch.tensor([points[n].thresholds for n in names]),
        "point_policies": torch.tensor([points[n].policy for n in names]),
    }
    metadata = {
        "operating_points": json.dumps(names),
        "calibration_images": str(len(labelled)),
        "training_photos": str(len(squares)),
        "calibration": json.dumps(calibration.measured),
        "validation_accuracy_after_focus_steps": json.dumps(stages),
    }
    seconds = time.perf_counter() - start + photos_seconds + validation_seconds
    with replaced_atomically(checkpoint_path(model.name)) as partial:
        torch.save({"seconds": seconds}, partial)
    return save_weights(model.name, tensors, model.about, model.flops_full, calibration.default, metadata)
