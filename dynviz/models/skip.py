"""Layer skipping: ConvNet-AIG (Veit & Belongie, ECCV 2018) and SkipNet (Wang et al., ECCV 2018).

Survey §3.2.1 (sample-wise dynamic depth: layer skipping).

A residual block computes x_{l+1} = x_l + F_l(x_l). Layer skipping puts a gate
in front of it that looks at x_l and decides whether F_l is worth running:

    x_{l+1} = x_l + g_l(x_l) · F_l(x_l),    g_l ∈ {0, 1}.

When g_l = 0 the block is not computed at all: the input passes through the
identity shortcut. Easy inputs take short paths and hard ones long paths, and
ConvNet-AIG shows the paths differ by category. Blocks that change the shape of
the feature map (a new stage) have no identity to fall back on and always run.

The gates are those of :mod:`dynviz.models.gates`: trained with hard
straight-through decisions and ConvNet-AIG's target-rate loss, by fine-tuning a
trained static network with its gates (SkipNet reports that reinforcement
learning alone stalls on CIFAR, and starts from a trained network too). At
inference a block runs when its gate's probability reaches the threshold θ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dynviz.cards import About
from dynviz.cost import stopwatch
from dynviz.explain import ExplainTarget
from dynviz.fused import FusedNetwork, inference_path
from dynviz.inputs import InputImage
from dynviz.models.base import Memo
from dynviz.models.cifar import CIFAR_LICENSE
from dynviz.models.gates import (
    CIFAR_DATA,
    DEFAULT_THRESHOLD,
    FUNCTION_MATCHING,
    LITE0_CAVEATS,
    LITE0_LICENSE,
    LITE0_PHOTOS_DATA,
    Gate,
    GatedModel,
    GatedOutput,
    Lite0Backbone,
    ResNet32Backbone,
    decisions,
    unit_input,
)
from dynviz.trace import BlockRecord, Trace
from dynviz.zoo import register_model

TARGET_RATE = 0.45
"""Each gate's execution rate in training (CIFAR). At 60% the first nine gates learnt to run at random (the Gumbel
noise) and at inference switched off all at once between θ = 0.6 and 0.7; at 45% the curve lies 0.9–3 points higher
below 0.6× the twin's FLOPs (docs/gating.md)."""
LITE_TARGET_RATE = 0.5


def sigmoid(logit: float) -> float:
    """σ of one number, in Python: a tensor operation would cost more than the arithmetic, at every block."""
    return 1 / (1 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1 + math.exp(logit))


class SkipNetwork(nn.Module):
    """A backbone (``stem``, ``blocks``, ``classify``) with an execution gate on every block that has an
    identity shortcut to fall back on."""

    def __init__(self, backbone: nn.Module, constant_start: bool = False, noise: bool = True):
        super().__init__()
        self.backbone = backbone
        self.noise = noise
        """Gumbel noise on the decisions in training; without it they are made as at inference."""
        self.units_shape_features = True
        """Whether the units' losses reach the backbone (:func:`~dynviz.models.gates.unit_input`)."""
        self.gates = nn.ModuleDict(
            {
                str(i): Gate(block.channels_in, 1, constant_start=constant_start)
                for i, block in enumerate(backbone.blocks)
                if block.identity_shortcut
            }
        )
        self.gate_of_block = [self.gates[str(i)] if str(i) in self.gates else None for i in range(len(backbone.blocks))]
        """Each block's gate or None, as a list: the executed path looks one up per block."""

    def forward(self, x: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> GatedOutput:
        """The masked dense path (training, batches): every block runs, skipped ones are multiplied by 0."""
        x = self.backbone.stem(x)
        gates = []
        for i, block in enumerate(self.backbone.blocks):
            if str(i) in self.gates:
                g = decisions(
                    self.gates[str(i)](unit_input(x, self.units_shape_features)), self.training, threshold, self.noise
                ).view(-1, 1, 1, 1)
                gates.append(g)
                x = x + g * (block(x) - x)
            else:
                x = block(x)
        return GatedOutput(self.backbone.classify(x), gates)

    def run(
        self,
        x: torch.Tensor,
        threshold: float,
        blocks: int | None = None,
        forced: Sequence[bool] | None = None,
        backbone: nn.Module | FusedNetwork | None = None,
    ) -> tuple[torch.Tensor, list[float | None], list[bool]]:
        """The executed path for one input: run each block whose gate says so (p ≥ θ), skip the others.
        Stops after ``blocks`` blocks (all by default); ``forced`` replays given decisions. ``backbone``: the
        backbone's inference path (:func:`dynviz.fused.inference_path`), by default its modules."""
        backbone = backbone or self.backbone
        x = backbone.stem(x)
        probabilities, executed = [], []
        for i, (block, gate) in enumerate(zip(backbone.blocks[:blocks], self.gate_of_block)):
            p = None if gate is None else sigmoid(float(gate.logits_of_one(x)))
            run = forced[i] if forced is not None else p is None or p >= threshold
            if run:
                x = block(x)
            probabilities.append(p)
            executed.append(run)
        return x, probabilities, executed

    def run_batch(self, x: torch.Tensor, threshold: float, backbone: nn.Module | FusedNetwork) -> torch.Tensor:
        """The executed path for a batch whose images decide apart (logits): each block runs on the images
        whose gate says so, gathered into a smaller batch and put back, while the others pass it by."""
        x = backbone.stem(x)
        for block, gate in zip(backbone.blocks, self.gate_of_block):
            if gate is None:
                x = block(x)
                continue
            running = (gate(x)[:, 0].sigmoid() >= threshold).nonzero().flatten()
            if len(running) == len(x):
                x = block(x)
            elif len(running):
                x = x.index_copy(0, running, block(x.index_select(0, running)))
        return backbone.classify(x)


@dataclass(frozen=True)
class BlockPart:
    """A block as built: where it is, what it costs, whether it has a gate."""

    name: str
    stage: int
    resolution: int
    flops: int


class LayerSkipping(GatedModel, nn.Module):
    """A zoo model around a :class:`SkipNetwork`: the threshold knob, and traces of the blocks run and skipped.
    Subclasses give ``name``, ``about`` and a backbone mixin."""

    unit = "block"
    network = SkipNetwork

    def __init__(self, net: SkipNetwork | None = None):
        super().__init__(net)
        blocks, flops = self.net.backbone.blocks, self.module_flops
        self.parts, stage = [], 0
        for i, side in enumerate(self.sides):
            stage += i > 0 and not blocks[i].identity_shortcut
            self.parts.append(BlockPart(f"block {i + 1}", stage, side, flops[f"backbone.blocks.{i}"]))
        self.fixed_flops = flops[""] - sum(part.flops for part in self.parts)
        """Stem, head and every gate: paid whatever the gates decide."""

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        threshold = self.threshold(settings)
        seen = self.network_input(image)
        backbone = inference_path(self.net.backbone, seen.tensor.shape)
        with stopwatch() as watch:
            x, probabilities, executed = self.net.run(seen.tensor, threshold, backbone=backbone)
            logits = backbone.classify(x)[0]
        records = tuple(
            BlockRecord(i, part.name, part.stage, part.resolution, p, run, part.flops)
            for i, (part, p, run) in enumerate(zip(self.parts, probabilities, executed))
        )
        spent = ("blocks run", sum(r.flops for r in records if r.executed))
        return self.gated_trace(image, seen, logits, records, spent, watch.ms, threshold)

    def explain_gate(self, image: InputImage, block: int, executed: Sequence[bool]) -> ExplainTarget:
        """Block ``block``'s gate logit (its push towards running), along the path the trace took."""
        seen = self.network_input(image)

        def gate_logit(x: torch.Tensor) -> torch.Tensor:
            return self.net.gates[str(block)](self.net.run(x, DEFAULT_THRESHOLD, block, executed)[0])

        return ExplainTarget(self, gate_logit, None, seen.tensor, 0, seen.box)


ABOUT = About(
    title="ResNet-32 with layer skipping (ConvNet-AIG gates), CIFAR-10",
    family="sample-wise dynamic depth: layer skipping (survey §3.2.1)",
    summary=(
        "Every residual block that keeps its input's shape has a small gate (pooling, then a 16-unit MLP) that "
        "reads the block's input and decides whether to run it. A skipped block is not computed. Trained with "
        "hard decisions sampled with Gumbel noise (straight-through gradients) and a target execution rate of "
        f"{TARGET_RATE:.0%} per gate, fine-tuned from resnet32_cifar."
    ),
    papers=(
        "Veit & Belongie, Convolutional networks with adaptive inference graphs, ECCV 2018",
        "Wang et al., SkipNet: Learning dynamic routing in convolutional networks, ECCV 2018",
    ),
    license=CIFAR_LICENSE,
    data=CIFAR_DATA,
)


class SkipResNetCifar(ResNet32Backbone, LayerSkipping):
    name = "skip_resnet_cifar"
    about = ABOUT


LITE_ABOUT = About(
    title="EfficientNet-Lite0 with layer skipping (ConvNet-AIG gates)",
    family="sample-wise dynamic depth: layer skipping (survey §3.2.1)",
    summary=(
        "Each of Lite0's MBConv blocks with an identity shortcut (9 of 16) has a small gate that reads the "
        "block's input and decides whether to run it. The gates are trained by distillation from Lite0 itself, "
        "with hard decisions sampled with Gumbel noise (straight-through gradients) and a target execution rate "
        f"of {LITE_TARGET_RATE:.0%} per gate."
    ),
    papers=(*ABOUT.papers, FUNCTION_MATCHING),
    license=LITE0_LICENSE,
    data=LITE0_PHOTOS_DATA,
    caveats=LITE0_CAVEATS,
)


class Lite0Skip(Lite0Backbone, LayerSkipping):
    name = "lite0_skip"
    about = LITE_ABOUT


register_model(SkipResNetCifar.name, emits=(BlockRecord,), tiny={"depth": 14})(SkipResNetCifar.build)
register_model(Lite0Skip.name, emits=(BlockRecord,))(Lite0Skip.build)
