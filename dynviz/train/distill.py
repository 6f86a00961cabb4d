"""Recipes for the gated EfficientNet-Lite0 models: distillation from Lite0 itself.

Only 250 labelled ImageNet images are available here (the calib half of the
sample), far too few to learn from labels. So the gated student starts from
Lite0's own weights and learns to match the static Lite0 — its teacher — on
strongly augmented views of every photo at hand, "function matching" in the
words of Beyer et al. (CVPR 2022): the same random-resized crop, flip and mixup
go to both networks, and the student minimises

    L = KL(softmax(z_teacher) ‖ softmax(z_student)) + λ · L_rate(g; t) + (α / 2) · ‖w − w⁰‖²

with the gates' target-rate loss and the L2-SP pull of Lite0's weights w toward
the pretrained w⁰ (Li et al., ICML 2018). The teacher labels every view, so any
folder of photos serves (``--photos``: a pool of everyday photos, ImageNet
validation images), but no labelled image of a test half (see
:func:`dynviz.data.training_photos`).

The gates and masks read Lite0's features without reshaping them
(:func:`~dynviz.models.gates.unit_input`): with the gradient attached, the rate penalty
rewrote Lite0's features to suit the units, and an adapting Lite0 drifted away from its
teacher within a hundred steps (docs/spatial.md). By default Lite0 stays as it is and the
weight pull (α) is 0; with ``--adapt`` its BatchNorm scales and shifts (``norms``) or all its weights
(``backbone``) learn at :data:`ADAPT_LR_SCALE` of the units' rate, held near their pretrained values:
lite0_dynconv (its 1×1 mask units then) gained 2.5 points at the same FLOPs with all of Lite0 adapting, and
lite0_skip's skipped blocks cost 0.8–2.5 points less at 0.6–0.8× Lite0's FLOPs with its norms adapting (on
the 644 validation images of its check; docs/gating.md). Lite0 tuned freely on the 250 labelled images alone
memorised them (9 points higher on them than on the test half). BatchNorm keeps ImageNet's statistics
(:class:`FrozenNorms`): recomputed on 4,000 of the photos with every block running, they cost lite0_skip 12 points
at θ = 0.1 on the sample's test half.

lite0_skip's gates decide with ConvNet-AIG's Gumbel noise in training, as the CIFAR gates do: decided as at
inference instead, their probabilities bunched on either side of θ = 0.5–0.7 and θ switched the network from
0.80× to 0.47× of Lite0's FLOPs at once; with the noise θ slides from 0.91× to 0.45× (docs/gating.md). The
masks (firm without it, docs/spatial.md) and the channel gates (fitted to Lite0's salient channels first) decide
as at inference.

Channel selection first fits each gate to the channels that matter on Lite0
itself (a dense target, one per channel and view, where the KL term gives one
per view). Distilled by KL alone instead, with Lite0 frozen and switched-off
channels at 0, its gates learnt nothing usable (0.4% on their own training
images after an epoch).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dynviz.cards import ModelCard
from dynviz.data import labelled_files, training_photos
from dynviz.inputs import InputError, load_image_file
from dynviz.models import channel_gating, dynconv, skip
from dynviz.models.efficientnet_lite import efficientnet_lite
from dynviz.models.gates import GatedOutput, adapted_lite0
from dynviz.models.lite_cascade import LiteCascade
from dynviz.progress import progress
from dynviz.train.cifar import checkpoint_path
from dynviz.train.gated import (
    decision_penalty,
    save_gated,
)
from dynviz.train.loop import Schedule, TensorSet, TrainOptions, fit, require_data
from dynviz.train.losses import teacher_matching

EPOCHS = 2
"""Every photo once an epoch: about 10,000 photos, 20 minutes an epoch on a 2-core CPU."""
GATES_PEAK_LR = 0.1
"""Gates learning, their last layer from zero, take a from-scratch rate rather than a fine-tuning one."""
ADAPT_LR_SCALE = {"none": 1.0, "norms": 0.1, "backbone": 0.003}
"""The rate of Lite0's adapting part, as a share of the gates': all its weights at 0.3% (a peak of 3·10⁻⁴; at 3% its
loss rose again within 30 steps), its BatchNorm scales and shifts alone at 10% (a peak of 10⁻²; at 3% the curve was
the same within the spread between runs, docs/gating.md)."""
WEIGHT_PULL = 0.01
"""α of the L2-SP pull: L2-SP's own range is 0.001–0.1."""
STORED_SIDE = 256
"""Images are kept as their central square at this side; crops of it are resized to the network's 224."""
SIDE = 224
CROP_AREA = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def central_square(image: Image.Image, side: int = STORED_SIDE) -> np.ndarray:
    width, height = image.size
    edge = min(width, height)
    box = ((width - edge) / 2, (height - edge) / 2, (width + edge) / 2, (height + edge) / 2)
    return np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC, box=box))


def stack(pixels: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


def photo_squares(paths: list[Path]) -> list[np.ndarray]:
    """The central squares of ``paths``; unreadable files are reported and left out."""
    pixels = []
    for path in progress(paths, len(paths), "reading photos"):
        try:
            pixels.append(central_square(load_image_file(path).image))
        except InputError as error:
            print(error, file=sys.stderr)
    return pixels


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 squares → float views at 224², each a random-resized crop with a random flip (one affine resampling)."""
    x = batch.float()
    n = len(x)
    area = torch.empty(n).uniform_(*CROP_AREA, generator=generator)
    ratio = torch.empty(n).uniform_(*map(math.log, CROP_RATIO), generator=generator).exp()
    width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    centre_x = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([width * flip, zero, centre_x], 1), torch.stack([zero, height, centre_y], 1)], 1)
    grid = F.affine_grid(theta, [n, 3, SIDE, SIDE], align_corners=False).to(x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def central_view(batch: torch.Tensor) -> torch.Tensor:
    """uint8 squares → their central 224² (87.5%, the crop of evaluation), as Lite's input."""
    margin = (STORED_SIDE - SIDE) // 2
    return (batch[..., margin : margin + SIDE, margin : margin + SIDE].float() - 127.0) / 128.0


def augmented_views(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Lite's input, (x − 127) / 128 at 224²: augmented with a generator, the central view without."""
    return central_view(batch) if generator is None else (augment(batch, generator) - 127.0) / 128.0


def prepare(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """:func:`augmented_views`, then (with a generator) mixup of half the images with a partner in the batch."""
    if generator is None:
        return central_view(batch)
    x = augment(batch, generator)
    n = len(x)
    weight = torch.rand(n, generator=generator).clamp(min=0.5)  # ≥ 0.5: the image stays the main one
    weight = torch.where(torch.rand(n, generator=generator) < 0.5, weight, torch.ones(n)).view(-1, 1, 1, 1)
    partner = torch.randperm(n, generator=generator)
    weight = weight.to(x.device)
    return (weight * x + (1 - weight) * x[partner.to(x.device)] - 127.0) / 128.0


class FrozenNorms(nn.Module):
    """Fine-tune ``net`` with its BatchNorm statistics kept (small, shifted batches would spoil them)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> FrozenNorms:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> GatedOutput:
        return self.net(x)


def training_images(options: TrainOptions) -> tuple[TensorSet, torch.Tensor]:
    """The labelled calib half of the ImageNet sample, and every training image (uint8 squares): that half and
    the ``--photos``."""
    root = require_data(options, "the ImageNet sample folder (its calib half is used)")
    items = labelled_files(root, LiteCascade.class_keys(), split="calib")
    labelled = stack([central_square(item.load().image) for item in items])
    extra = photo_squares(training_photos(list(options.photos), LiteCascade.class_keys()))
    images = torch.cat([labelled, *([stack(extra)] if extra else [])])
    print(f"{len(items)} labelled images and {len(extra)} photos", file=sys.stderr)
    return TensorSet(labelled, torch.tensor([item.label for item in items])), images


def distill(
    name: str,
    net: nn.Module,
    target: float,
    options: TrainOptions,
    model: Callable,
    data: tuple[TensorSet, torch.Tensor] | None = None,
    metadata: dict[str, str] | None = None,
) -> ModelCard:
    """Distil ``net`` (Lite0 with gates) from Lite0 on ``data`` (:func:`training_images`, read here if not given):
    its Lite0 fixed, or partly or wholly fine-tuned and held near its weights (``--adapt``)."""
    labelled, images = data or training_images(options)
    adapts = options.adapt != "none"
    net.backbone.requires_grad_(options.adapt == "backbone")
    if options.adapt == "norms":
        for norm in (m for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.requires_grad_(True)
    net.units_shape_features = False
    train = TensorSet(images, torch.full((len(images),), -1))

    schedule = Schedule(
        epochs=options.epochs or EPOCHS,
        batch_size=64,
        peak_lr=GATES_PEAK_LR,
        weight_decay=1e-5,
        pretrained_lr_scale=ADAPT_LR_SCALE[options.adapt],
        pretrained_pull=WEIGHT_PULL if adapts else 0.0,
    )
    *_, (accuracy,) = fit(
        FrozenNorms(net),
        teacher_matching,
        train,
        labelled,
        prepare,
        schedule,
        checkpoint_path(name),
        options.device,
        options.resume,
        decision_penalty(net, target),
        teacher=efficientnet_lite("lite0"),
        pretrained=net.backbone if adapts else None,
    )
    metadata = (metadata or {}) | {"calib_accuracy": f"{accuracy:.4f}", "target_rate": str(target)}
    return save_gated(net, model, metadata, adapted_lite0(model.about, options.adapt) if adapts else None)


def train_lite0_skip(options: TrainOptions) -> ModelCard:
    net = skip.SkipNetwork(skip.Lite0Skip.backbone(), constant_start=True)
    return distill(skip.Lite0Skip.name, net, skip.LITE_TARGET_RATE, options, skip.Lite0Skip)


def train_lite0_dynconv(options: TrainOptions) -> ModelCard:
    net = dynconv.DynConvNetwork(dynconv.Lite0DynConv.backbone(), constant_start=True, noise=False)
    name, target = dynconv.Lite0DynConv.name, dynconv.LITE_TARGET_RATE
    return distill(name, net, target, options, dynconv.Lite0DynConv)


SALIENCY_BATCH = 32
FILL_BATCHES = 20
"""The channels' means are taken over this many batches of views (640 images)."""
GATE_FIT_EPOCHS = 300
"""Passes over the recorded (block input, salient channels) pairs: the gates are small, the pairs few thousand."""


def teacher_views(images: torch.Tensor, passes: int, device: str) -> Iterator[torch.Tensor]:
    """Augmented views of ``images`` in a seeded order: every call yields the same views."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(passes):
        for batch in torch.randperm(len(images), generator=generator).split(SALIENCY_BATCH):
            yield prepare(images[batch], generator).to(device)


def fit_gate(gate: nn.Module, pooled: torch.Tensor, salient: torch.Tensor) -> float:
    """Binary cross-entropy of the gate's logits on the salient channels; returns the share of decisions
    (p ≥ ½) that agree with them."""
    optimizer = torch.optim.Adam(gate.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(GATE_FIT_EPOCHS):
        for batch in torch.randperm(len(pooled)).split(256):
            loss = F.binary_cross_entropy_with_logits(gate(pooled[batch, :, None, None]), salient[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return ((gate(pooled[:, :, None, None]) >= 0) == salient.bool()).float().mean().item()


def train_lite0_channels(options: TrainOptions) -> ModelCard:
    """First each channel gate learns which channels of its block are
    :func:`~dynviz.models.channel_gating.salient` for an input, on augmented views that Lite0 itself runs (one
    pass over the images; the channels' fills are their means over the first views); then the gated network is
    distilled from Lite0 with Lite0 fixed (:func:`distill`). A resumed run whose distillation has a checkpoint
    takes the gates from it."""
    name = channel_gating.Lite0Channels.name
    labelled, images = training_images(options)
    net = channel_gating.ChannelGatedNetwork(channel_gating.Lite0Channels.backbone(), noise=False)
    metadata = {"salient_share": str(channel_gating.SALIENT_SHARE)}
    if not (options.resume and checkpoint_path(name).exists()):
        metadata |= fit_gates_to_salient_channels(net.eval().requires_grad_(False), labelled, images, options.device)
    net.requires_grad_(True)
    target = channel_gating.LITE_TARGET_RATE
    return distill(name, net, target, options, channel_gating.Lite0Channels, (labelled, images), metadata)


def fit_gates_to_salient_channels(
    net: channel_gating.ChannelGatedNetwork, labelled: TensorSet, images: torch.Tensor, device: str
) -> dict[str, str]:
    """Each gate fitted to its block's salient channels on Lite0's views of ``images``; returns the share of
    the labelled images the gated network then answers right."""
    backbone = net.backbone.to(device)
    start = time.perf_counter()
    with torch.no_grad():
        net.set_fills_to_means(itertools.islice(teacher_views(images, 1, device), FILL_BATCHES))
        pooled, salient = defaultdict(list), defaultdict(list)
        for x in teacher_views(images, 1, device):
            for i, block, block_input in channel_gating.block_inputs(backbone, x):
                if net.fill(i) is not None:
                    pooled[i].append(block_input.mean((2, 3)).cpu())
                    contribution = channel_gating.contributions(block, block_input, net.fill(i))
                    salient[i].append(channel_gating.salient(contribution).cpu())
    print(f"Lite0 ran {len(images)} views in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    net.cpu()
    for i in pooled:
        gate = net.gates[str(i)].requires_grad_(True)
        agreement = fit_gate(gate, torch.cat(pooled[i]), torch.cat(salient[i]))
        print(f"block {i + 1}: gate agrees with {agreement:.1%} of the salient channels' decisions", file=sys.stderr)
    with torch.no_grad():
        answers = torch.cat([net(central_view(batch)).logits.argmax(1) for batch in labelled.images.split(64)])
    return {"calib_accuracy_fitted_gates": f"{(answers == labelled.labels).float().mean().item():.4f}"}
