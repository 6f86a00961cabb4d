"""Recipes for the gated CIFAR models, on

    L = KL(softmax(z_twin) ‖ softmax(z)) + λ · L_rate(g; t)

(:func:`dynviz.train.losses.execution_rate_loss`) with each model's target rate
t. The gates make hard decisions in training, so the network learns to work
with blocks, channels or positions really switched off.

Every gated CIFAR model starts from the trained resnet32_cifar, its static
twin, and is fine-tuned for :data:`FINE_TUNE_EPOCHS` epochs at a lower learning rate
with λ = :data:`RATE_WEIGHT`, matching the twin's output on each augmented
view (distillation as function matching, as the Lite0 models learn from Lite0)
rather than the labels: the twin's answers are what the gated network should
keep while it learns to compute less.
Trained from scratch in the shared schedule's 10 epochs instead, the gated
networks ended 5–6 points under the twin, even with every gate on: learning the
decisions and the filters at once costs a short schedule its accuracy.

Gates are sampled with ConvNet-AIG's Gumbel noise (:func:`dynviz.models.gates.decisions`). Fine-tuned from
the 10-epoch twin, the noise had kept every gate of a skip network at p = 0.49–0.54 for every image; from the
40-epoch twin the skip network's last-stage gates spread over p = 0.05–0.98 by input and class, and θ trades
accuracy for FLOPs along a curve (86.9% at 0.89×, 86.2% at 0.71×, 82.2% at 0.40×), where gates trained
without the noise kept p = 0.48–0.52 and fell from 84.8% at 0.60× to 48.9% at 0.23× between θ = 0.5 and 0.55.
Pixel masks are sampled the same way, and weigh each block's share of its FLOPs (DynConv's sparsity criterion).
"""

from __future__ import annotations

from torch import nn

from dynviz.cards import About, ModelCard
from dynviz.models import channel_gating, dynconv, skip
from dynviz.models.gates import DEFAULT_POINT
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.train.cifar import fine_tune_schedule, save_weights, train_on_cifar, trained, validation_metadata
from dynviz.train.loop import Regularizer, TrainOptions
from dynviz.train.losses import execution_rate_loss, sparsity_criterion, teacher_matching

RATE_WEIGHT = 5.0
"""λ: gates added to a trained network (the CIFAR twin, Lite0) meet a network that resists losing work, so the
pull must be strong."""
FINE_TUNE_EPOCHS = {
    skip.SkipResNetCifar.name: 36,
    channel_gating.ChannelGateResNetCifar.name: 24,
    dynconv.DynConvResNetCifar.name: 24,
}
"""Each gated CIFAR model's fine-tune. Every one's validation accuracy still climbed at the 12th epoch (skip, at its
earlier 60% rate, 87.2%; channel selection 86.7%, DynConv 87.1%); 24 epochs gave 87.4%, 87.3% and 87.4%
(docs/gating.md, docs/spatial.md). The skip network at its 45% rate gained 0.4–1.3 points below 0.45× the twin's
FLOPs from 36 epochs instead of 24, and stayed within 0.2 points above."""


TARGET_RATES = {
    skip.SkipResNetCifar.name: skip.TARGET_RATE,
    channel_gating.ChannelGateResNetCifar.name: channel_gating.TARGET_RATE,
    dynconv.DynConvResNetCifar.name: dynconv.TARGET_RATE,
}
"""t: each gated CIFAR model's execution rate in training."""


def rate_penalty(target: float) -> Regularizer:
    """ConvNet-AIG's target rate per gate (layer skipping, channel selection)."""
    return lambda output, progress: RATE_WEIGHT * execution_rate_loss(output.gates, target)


def sparsity_penalty(target: float) -> Regularizer:
    """DynConv's network-level criterion with annealed per-block bounds (pixel masks)."""
    return lambda output, progress: RATE_WEIGHT * sparsity_criterion(output.gates, output.costs, target, progress)


def decision_penalty(net: nn.Module, target: float) -> Regularizer:
    """What pulls ``net``'s decisions to ``target``: DynConv's criterion for pixel masks, a rate per gate else."""
    return (sparsity_penalty if isinstance(net, dynconv.DynConvNetwork) else rate_penalty)(target)


def save_gated(net: nn.Module, model: type, metadata: dict[str, str], about: About | None = None) -> ModelCard:
    """The gated network's weights and its card's head (``about``, the model's own by default), with the static
    twin's FLOPs."""
    built = model(net)
    return save_weights(model.name, net.state_dict(), about or built.about, built.flops_full, DEFAULT_POINT, metadata)


def twin() -> ResNetCifar:
    """The trained static ResNet-32 every gated CIFAR model starts from."""
    return trained("resnet32_cifar", ResNetCifar(32))


def fine_tune(net: nn.Module, options: TrainOptions, model: type) -> ModelCard:
    target = TARGET_RATES[model.name]
    schedule = fine_tune_schedule(options, FINE_TUNE_EPOCHS[model.name])
    penalty = decision_penalty(net, target)
    history, _ = train_on_cifar(model.name, net, teacher_matching, options, penalty, schedule, teacher=twin())
    return save_gated(net, model, validation_metadata(history) | {"target_rate": str(target)})


def train_skip(options: TrainOptions) -> ModelCard:
    net = skip.SkipNetwork(twin())
    return fine_tune(net, options, skip.SkipResNetCifar)


def train_channel_gate(options: TrainOptions) -> ModelCard:
    net = channel_gating.ChannelGatedNetwork(twin())
    return fine_tune(net, options, channel_gating.ChannelGateResNetCifar)


def train_dynconv(options: TrainOptions) -> ModelCard:
    return fine_tune(dynconv.DynConvNetwork(twin()), options, dynconv.DynConvResNetCifar)
