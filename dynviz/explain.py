"""captum attributions of a model's decisions, mapped onto the input image.

For an exit: Grad-CAM (Selvaraju et al., ICCV 2017, captum's LayerGradCam) of
the answering stage's top-1 logit at its last feature map, upsampled to the
stage's input and placed on the region of the photo that stage saw. It shows
what the stage relied on when it was sure enough to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dynviz.runtime import exclusive
from dynviz.trace import Box


@dataclass(frozen=True)
class ExplainTarget:
    """What a model hands over to be explained: a differentiable forward, its layer and input."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    layer: nn.Module | None
    """The feature map Grad-CAM reads; None for pixel attributions."""
    inputs: torch.Tensor
    target: int
    box: Box


class _Reached(Exception):
    """Carries a module's output out of a forward pass that need not go further."""


def output_of(module: nn.Module, run: Callable[[], object]) -> torch.Tensor:
    """What ``module`` returns while ``run()`` runs the network it belongs to, the rest of the pass skipped: a
    decision inside a network (a routing layer's logits) as a differentiable function of its input, without
    writing the network's forward out again up to that point."""

    def stop(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        raise _Reached(output)

    handle = module.register_forward_hook(stop)
    try:
        run()
    except _Reached as reached:
        return reached.args[0]
    finally:
        handle.remove()
    raise ValueError(f"{type(module).__name__} did not run")


@dataclass(frozen=True)
class Heatmap:
    values: np.ndarray
    """[rows, cols] in 0..1, covering ``box``."""
    box: Box
    """Where it lies on the input image, in its pixels."""


def grad_cam(target: ExplainTarget) -> Heatmap:
    # captum is imported where an attribution is made, not by every model that can be explained: training and
    # evaluation run without it (a GPU machine lent for training has torch but not captum).
    from captum.attr import LayerAttribution, LayerGradCam

    # Hooks attach to the shared model while captum runs: hold it alone, with gradients on.
    with exclusive(target.model), torch.enable_grad():
        inputs = target.inputs.clone().requires_grad_(True)
        cam = LayerGradCam(target.forward, target.layer).attribute(inputs, target=target.target, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    values = cam[0, 0].numpy()
    return Heatmap(values / values.max() if values.max() > 0 else values, target.box)


def pushed_towards(target: ExplainTarget, steps: int = 32) -> Heatmap:
    """Which input pixels pushed ``target.forward``'s output up: Integrated Gradients (Sundararajan et al.,
    ICML 2017; captum) from a black image, summed over colour channels, positive part only."""
    from captum.attr import IntegratedGradients  # where an attribution is made (grad_cam says why)

    with exclusive(target.model), torch.enable_grad():
        inputs = target.inputs.clone().requires_grad_(True)
        attributions = IntegratedGradients(target.forward).attribute(
            inputs, torch.zeros_like(inputs), target=target.target, n_steps=steps
        )
    values = attributions[0].sum(0).clamp(min=0).detach().numpy()
    return Heatmap(values / values.max() if values.max() > 0 else values, target.box)
