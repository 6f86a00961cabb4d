"""Sparse mixture of experts in a vision transformer: Switch routing (Fedus et al., JMLR 2022) as in V-MoE
(Riquelme et al., NeurIPS 2021).

Survey §3.2.2 (dynamic width: mixture of experts, token by token) and §3.3.

Every other MLP of the transformer becomes E experts, MLPs of the same width,
and a router that sends each token x to the experts with the largest gates

    p(x) = softmax(W_r x),    y = Σ_{e ∈ top-k(p(x))} p_e(x) · MLP_e(x).

Only the chosen experts run for a token: with k = 1 a token costs what it costs
in the dense transformer (plus the router's E·d), while the layer holds E times
the parameters. Training adds Switch's load-balancing loss, which is smallest
when tokens spread evenly over the experts (f_e: the share of tokens sent to e,
P_e: the mean gate of e, over the batch):

    L_balance = α · E · Σ_e f_e · P_e,    α = 0.01.

No token is dropped (no capacity factor): on a batch of one image it would only
drop tokens because others came first. The knob k runs each token's best k
experts; the network learns with k = 1.

The bundled network is upcycled from the trained dense transformer (Sparse
Upcycling, Komatsuzaki et al., ICLR 2023): every expert starts as a copy of the
dense MLP it replaces, its output scaled by E against the router's initial
gates of 1/E (:func:`upcycle`), so training starts from the dense network's
function and the experts part ways as the router sends them different tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dynviz.cards import OperatingPoint
from dynviz.cost import module_macs
from dynviz.explain import ExplainTarget, output_of
from dynviz.inputs import InputImage
from dynviz.models.base import (
    Knob,
    collecting,
    decided,
)
from dynviz.models.cifar import DecidingNetwork, about_cifar, cifar_view
from dynviz.models.vit import (
    DEPTH,
    MLP_RATIO,
    TINY,
    VIT_PAPER,
    WIDTH,
    Mlp,
    VisionTransformer,
)
from dynviz.trace import Box, ExpertRecord, rounded
from dynviz.zoo import register_model

EXPERTS = 4
BALANCE_WEIGHT = 0.01
"""α of the load-balancing loss (Switch's value)."""


@dataclass(frozen=True)
class Routing:
    """What one mixture layer decided for a batch of tokens."""

    probabilities: torch.Tensor
    """[N, tokens, E] the router's gates."""
    choices: torch.Tensor
    """[N, tokens, k] the experts that ran, best first."""


def balance_loss(routing: Routing) -> torch.Tensor:
    """α · E · Σ_e f_e · P_e over the batch (f_e counts each token's first expert)."""
    experts = routing.probabilities.shape[-1]
    dispatched = nn.functional.one_hot(routing.choices[..., 0], experts).float().flatten(0, 1).mean(0)
    return BALANCE_WEIGHT * experts * (dispatched * routing.probabilities.flatten(0, 1).mean(0)).sum()


class SwitchMlp(nn.Module):
    """E expert MLPs behind a router; each token runs only its top-k experts."""

    def __init__(self, dim: int, hidden: int, experts: int = EXPERTS):
        super().__init__()
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(Mlp(dim, hidden) for _ in range(experts))

    def forward(self, x: torch.Tensor, per_token: int = 1) -> torch.Tensor:
        probabilities = self.router(x).softmax(-1)
        gates, choices = probabilities.topk(per_token, -1)
        decided(self, Routing(probabilities, choices))
        tokens, flat = x.reshape(-1, x.shape[-1]), choices.reshape(-1, per_token)
        y = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, slot = (flat == e).nonzero(as_tuple=True)
            if len(rows):  # an expert no token chose does not run
                gate = gates.reshape(-1, per_token)[rows, slot, None]
                y = y.index_add(0, rows, (expert(tokens[rows]) * gate).to(y.dtype))  # bf16 under autocast
        return y.view_as(x)


@dataclass
class RoutedOutput:
    """A mixture network's training output: its logits and every mixture layer's routing (for the balance
    loss)."""

    logits: torch.Tensor
    routings: list[Routing]


def mixture_layers(depth: int) -> list[int]:
    """Every other layer, from the second, as in V-MoE."""
    return list(range(1, depth, 2))


class MoEVisionTransformer(VisionTransformer):
    def __init__(self, experts: int = EXPERTS, **config):
        width, depth = config.get("width", WIDTH), config.get("depth", DEPTH)
        hidden = width * config.get("mlp_ratio", MLP_RATIO)
        moe = set(mixture_layers(depth))
        super().__init__(**config, mlp=lambda i: SwitchMlp(width, hidden, experts) if i in moe else Mlp(width, hidden))

    def forward(self, x: torch.Tensor, per_token: int = 1) -> torch.Tensor | RoutedOutput:
        """The logits, with ``per_token`` experts per token in every mixture layer; in training also the
        routings."""
        with collecting() as decisions:
            tokens = self.tokens(x)
            for layer in self.layers:
                mixture = isinstance(layer.mlp, SwitchMlp)
                tokens = layer(tokens, self.side, per_token) if mixture else layer(tokens, self.side)
            logits = self.classify(tokens)
        return RoutedOutput(logits, [routing for _, routing in decisions]) if self.training else logits


def balance_regularizer(output: RoutedOutput, progress: float) -> torch.Tensor:
    return sum(balance_loss(routing) for routing in output.routings)


ABOUT = about_cifar(
    "Mixture-of-experts vision transformer for CIFAR-10 (Switch routing)",
    "sample-wise dynamic width and parameters: mixture of experts, token by token (survey §3.2.2)",
    f"The CIFAR vision transformer with {EXPERTS} expert MLPs in every other layer: a router sends each of the "
    "image's 64 tokens to one expert, so a token costs what it costs in the dense transformer while the layer "
    "holds four times the parameters. The Dynamic parameters page colours your photo's tokens by their expert.",
    (
        "Fedus et al., Switch transformers, JMLR 2022",
        "Riquelme et al., Scaling vision with sparse mixture of experts, NeurIPS 2021",
        VIT_PAPER,
    ),
)


def per_token_point(k: int) -> str:
    return f"top-{k}"


ROUTER_INIT_STD = 1e-3
"""The upcycled router's weights: gates start within a percent of 1/E, in a random order per token."""


def upcycle(dense: VisionTransformer, experts: int = EXPERTS) -> MoEVisionTransformer:
    """The mixture network computing what ``dense`` computes: every expert a copy of the dense MLP it replaces
    with its second layer scaled by E, the router near zero (gates ≈ 1/E), every other weight copied."""
    moe = MoEVisionTransformer(experts, **dense.config)
    state = dense.state_dict()
    for layer in mixture_layers(len(dense.layers)):
        prefix = f"layers.{layer}.mlp."
        dense_mlp = {key.removeprefix(prefix): state.pop(key) for key in list(state) if key.startswith(prefix)}
        for e in range(experts):
            for key, value in dense_mlp.items():
                state[f"{prefix}experts.{e}.{key}"] = value * experts if key.startswith("fc2.") else value
        router = moe.layers[layer].mlp.router.weight
        state[f"{prefix}router.weight"] = torch.randn_like(router) * ROUTER_INIT_STD
    moe.load_state_dict(state)
    return moe


class MoEViTCifar(DecidingNetwork):
    name = "moe_vit_cifar"
    about = ABOUT
    default_point = per_token_point(1)
    baselines = ("vit_cifar",)
    network = MoEVisionTransformer

    def __init__(self, net: MoEVisionTransformer):
        super().__init__(net, VisionTransformer(**net.config))
        self.mixtures = [m for m in self.net.modules() if isinstance(m, SwitchMlp)]
        self.experts = len(self.mixtures[0].experts) if self.mixtures else 1
        dim = self.net.class_token.shape[-1]
        self.expert_flops = module_macs(self.mixtures[0].experts[0], (1, dim)) if self.mixtures else 0
        """One token through one expert."""
        experts = sum(self.part_flops.get(name, 0) for name in self.named(Mlp) if ".experts." in name)
        self.shared_flops = self.flops - experts
        """Everything but the experts: the same for every input."""
        self.layer_index = {layer.mlp: i for i, layer in enumerate(self.net.layers)}

    def knobs(self) -> list[Knob]:
        return [
            Knob(
                "per_token",
                "Experts per token (k)",
                1,
                self.experts,
                1,
                1,
                "Run each token's k best experts, weighted by their gates. The network learnt with k = 1; more "
                "costs more per token.",
            )
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {per_token_point(k): OperatingPoint(per_token_point(k), {"per_token": k}) for k in (1, 2)}

    def record(self, module: SwitchMlp, routing: Routing, box: Box) -> ExpertRecord:
        choices, gates = routing.choices[0], routing.probabilities[0].gather(-1, routing.choices[0])
        layer = self.layer_index[module]
        return ExpertRecord(
            layer=layer,
            name=f"layer {layer + 1}",
            experts=self.experts,
            resolution=self.net.side,
            box=box,
            choices=tuple(choices[1:, 0].tolist()),
            gates=rounded(gates[1:, 0].tolist(), 3),
            class_choice=int(choices[0, 0]),
            per_token=choices.shape[-1],
            flops=choices.numel() * self.expert_flops,
        )

    def run(self, x: torch.Tensor, settings: dict[str, float]) -> torch.Tensor:
        return self.net(x, int(settings["per_token"]))

    def records(self, decisions: list[tuple[nn.Module, Routing]], box: Box) -> tuple[ExpertRecord, ...]:
        return tuple(self.record(module, routing, box) for module, routing in decisions)

    def spent(self, records: tuple[ExpertRecord, ...]) -> tuple[float, dict[str, float]]:
        experts = sum(r.flops for r in records)
        return self.shared_flops + experts, {"attention, embedding, router": self.shared_flops, "experts": experts}

    def explain_routing(self, image: InputImage, layer: int, token: int, expert: int) -> ExplainTarget:
        """What captum needs to attribute the router's logit of ``expert`` for image token ``token`` (row by row)
        in mixture layer ``layer``: which pixels pushed this token to this expert."""
        view = cifar_view(image)
        router = self.net.layers[layer].mlp.router

        def router_logits(x: torch.Tensor) -> torch.Tensor:
            return output_of(router, lambda: self.net(x))[:, 1 + token]

        return ExplainTarget(self.net, router_logits, None, view.tensor(), expert, view.box)


register_model(MoEViTCifar.name, emits=(ExpertRecord,), tiny=TINY)(MoEViTCifar.build)
