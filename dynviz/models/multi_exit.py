"""What the CIFAR multi-exit networks (MSDNet, RANet) share behind the zoo's interface.

Such a network is a chain of ``blocks`` with one exit ``classifiers[k]`` after
each: ``start(x)`` is the state before the first block, each block maps a state
to the next, and ``exit_features(state)`` is what an exit classifier reads.
An input leaves at the first exit whose temperature-calibrated confidence
passes τ_k (:func:`dynviz.models.base.run_exits`); blocks after it are never
computed, and a new knob setting reuses the blocks already computed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from dynviz.cards import anytime_point, load_card
from dynviz.cost import macs_by_module, stopwatch
from dynviz.explain import ExplainTarget
from dynviz.inputs import InputImage
from dynviz.models.base import (
    ExitPart,
    Memo,
    ThresholdExits,
    collecting,
    forced_exit,
    run_exits,
)
from dynviz.models.cifar import CIFAR_SIZE, Cifar10Classifier, cifar_input
from dynviz.models.resnet_cifar import resnet_flops
from dynviz.trace import Box, Cost, Trace, build
from dynviz.zoo import load_weights

ENSEMBLE_STAGE_PAPER = "Hinton et al., Distilling the knowledge in a neural network, 2015 (the ensemble stage)"
ENSEMBLE_TAUGHT_DATA = (
    "CIFAR-10 train split less 5,000 validation images (which calibrate the exits): 40 epochs on the labels, "
    "then 12 in which every exit matches the ensemble of this project's ResNet-32 and ResNet-56 (trained on the "
    "labels alone); measured on the 10,000 test images"
)
"""The data line of a card whose recipe ends with the ensemble stage (:func:`dynviz.train.multi_exit.train`)."""


def exit_logits(net: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Only what exit ``k`` needs: blocks 1..k and classifier k."""
    state = net.start(x)
    for block in net.blocks[: k + 1]:
        state = block(state)
    return net.classifiers[k](net.exit_features(state))


def every_exit(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Training and batch evaluation: every block in turn, and the logits of every exit."""
    state, logits = net.start(x), []
    for block, classifier in zip(net.blocks, net.classifiers):
        state = block(state)
        logits.append(classifier(net.exit_features(state)))
    return logits


@dataclass(frozen=True)
class ExitOutput:
    logits: torch.Tensor
    latency_ms: float
    """Of its block and classifier."""
    decisions: tuple = ()
    """What the block's layers decided on the way (:func:`dynviz.models.base.collecting`)."""


class CalibratedExits(Cifar10Classifier, ThresholdExits, nn.Module):
    """A multi-exit CIFAR network with calibrated exits, operating points and traces. Subclasses give
    ``name``, ``about``, ``network`` and ``config`` (the network class and its config dataclass), and name
    their exits."""

    baselines = ("resnet20_cifar", "resnet32_cifar", "resnet56_cifar")
    network: type
    config: type

    def __init__(
        self,
        net: nn.Module,
        temperatures: torch.Tensor,
        operating_points: dict[str, tuple[float, ...]],
        default_point: str,
    ):
        super().__init__()
        self.net = self.served(net)
        self.register_buffer("temperatures", temperatures.float())
        self.point_thresholds = operating_points
        self.default_point = default_point
        # Every part's cost, measured once now (FlopCounterMode's hooks are process-wide).
        probe = torch.zeros(1, 3, CIFAR_SIZE, CIFAR_SIZE)
        with torch.inference_mode():
            self.module_flops = macs_by_module(net, lambda: net(probe))
        self.baseline_flops = resnet_flops()
        self.exit_parts = [
            ExitPart(
                self.exit_part_name(k),
                self.exit_resolution(k),
                self.module_flops[f"blocks.{k}"] + self.module_flops[f"classifiers.{k}"],
            )
            for k in range(len(net.blocks))
        ]

    @property
    def flops_full(self) -> float:
        """What its static counterpart costs: here, its own whole path (every exit computed)."""
        return sum(part.flops for part in self.exit_parts)

    def exit_part_name(self, k: int) -> str:
        raise NotImplementedError

    def exit_resolution(self, k: int) -> int:
        """The side of the image exit ``k``'s path has seen."""
        return CIFAR_SIZE

    def explain_layer(self, k: int) -> nn.Module:
        """The feature map exit ``k``'s Grad-CAM is taken on."""
        raise NotImplementedError

    def grid_records(self, answered: int, box: Box, memo: Memo) -> tuple:
        """Records of the network's parts beyond its exits (MSDNet's grid of nodes, DVT's token grids), given
        the exit taken, the view's ``box`` and the blocks computed (``memo[k]``: :class:`ExitOutput`)."""
        return ()

    @classmethod
    def build(cls, pretrained: bool = True, **config) -> CalibratedExits:
        """Trained and calibrated; or untrained in ``config`` (the network's config fields), with temperatures 1,
        an anytime point per exit and one budget point at τ = ½ (the default)."""
        if not pretrained:
            layout = cls.config(**config)
            points = {anytime_point(k): forced_exit(layout.exits, k) for k in range(layout.exits)}
            points["τ = 0.5"] = (0.5,) * (layout.exits - 1)
            return cls(cls.network(layout), torch.ones(layout.exits), points, "τ = 0.5")
        card = load_card(cls.name)
        state, metadata = load_weights(cls.name)
        net = cls.network(build(cls.config, json.loads(metadata["config"])))
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        names = json.loads(metadata["operating_points"])
        points = {name: tuple(round(float(t), 4) for t in row) for name, row in zip(names, state["thresholds"])}
        return cls(net, state["temperatures"], points, card.default_point)

    def exit_names(self) -> list[str]:
        return [part.name for part in self.exit_parts]

    def exit_output(self, x: torch.Tensor, k: int, memo: Memo) -> ExitOutput:
        """Block k and its classifier, once per input: later knob settings reuse them from ``memo``.
        Only the deepest block's state is kept (a gallery holds thousands of memos)."""
        if k not in memo:
            state = self.net.start(x) if k == 0 else self._frontier(x, k - 1, memo)
            with stopwatch() as watch, collecting() as decisions:
                state = self.net.blocks[k](state)
                logits = self.net.classifiers[k](self.net.exit_features(state))[0]
            memo[k] = ExitOutput(logits, watch.ms, tuple(decisions))
            if k < len(self.net.blocks) - 1:
                memo["frontier"] = state
            else:
                memo.pop("frontier", None)
        return memo[k]

    def _frontier(self, x: torch.Tensor, k: int, memo: Memo):
        self.exit_output(x, k, memo)
        return memo["frontier"]

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        seen = cifar_input(image)
        x = seen.tensor
        thresholds = self.thresholds(settings)
        decision = run_exits(
            self.exit_parts,
            thresholds,
            seen.box,
            lambda k: self.exit_output(x, k, memo),
            self.temperatures,
            self.labels,
        )
        answered = next(r.index for r in decision.records if r.taken)
        cost = Cost(decision.flops, self.flops_full, decision.breakdown, decision.latency_ms, self.baseline_flops)
        records = decision.records + self.grid_records(answered, seen.box, memo)
        return Trace(
            self.name, image.name, image.size, decision.answer, cost, records, self.applied(thresholds), seen.notes
        )

    def explain_exit(self, image: InputImage, k: int, target: int) -> ExplainTarget:
        """Exit k's path (blocks 1..k, classifier k) and the feature map of :meth:`explain_layer`."""
        seen = cifar_input(image)
        return ExplainTarget(
            self, lambda x: exit_logits(self.net, x, k), self.explain_layer(k), seen.tensor, target, seen.box
        )
