"""Recipe for ``gfnet_lite0``'s learned policy: AdaFocusV2's end-to-end training, through a differentiable crop.

The glance and focus networks are the pretrained Lite0, frozen. On each
augmented 224² view of the calib images the glance sees the view at 160 px,
the policy turns the glance's features into a patch centre c (soft-argmax), the
patch is cut from the view by bilinear interpolation around c, and the loss is
the negative log-likelihood of the label under the fused prediction,

    L = −log ½ (softmax(z_glance) + softmax(z_focus(c)))_y.

The crop is differentiable in c, so the gradient reaches the policy through
the frozen focus network: the policy learns to look where looking helps.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cards import ModelCard
from dynviz.data import labelled_files
from dynviz.models.efficientnet_lite import efficientnet_lite
from dynviz.models.gfnet import (
    GLANCE_RESOLUTION,
    PATCH,
    PATCH_FRACTION,
    GlanceAndFocus,
    LearnedPolicy,
    patch_centre_limits,
)
from dynviz.train.cifar import checkpoint_path, save_weights
from dynviz.train.distill import FrozenNorms, augmented_views, central_square, stack
from dynviz.train.loop import Schedule, TensorSet, TrainOptions, fit, require_data

EPOCHS = 30
"""250 images a pass, so a pass is short: about 20 s on a 2-core CPU."""


class GlanceThenFocus(nn.Module):
    """The glance, the learned policy and one focus step on a batch: the log of the fused prediction."""

    def __init__(self, policy: LearnedPolicy):
        super().__init__()
        self.net = efficientnet_lite("lite0")
        self.policy = policy

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            glance = F.interpolate(views, size=(GLANCE_RESOLUTION,) * 2, mode="bilinear", antialias=True)
            features = self.net.features(glance)
            glance_probabilities = self.net.classifier(features.mean((2, 3))).softmax(-1)
        centre = self.policy.soft_centre(self.policy(features.float())).clamp(*patch_centre_limits())
        n = len(views)
        scale = torch.full((n,), PATCH_FRACTION, device=views.device)
        zero = torch.zeros(n, device=views.device)
        theta = torch.stack(
            [torch.stack([scale, zero, 2 * centre[:, 0] - 1], 1), torch.stack([zero, scale, 2 * centre[:, 1] - 1], 1)],
            1,
        )
        grid = F.affine_grid(theta, [n, 3, PATCH, PATCH], align_corners=False)
        patches = F.grid_sample(views, grid.to(views.dtype), mode="bilinear", align_corners=False)
        focus_probabilities = self.net(patches).float().softmax(-1)
        return ((glance_probabilities.float() + focus_probabilities) / 2).log()


def train(options: TrainOptions) -> ModelCard:
    start = time.perf_counter()
    root = require_data(options, "the ImageNet sample folder (its calib half is used)")
    items = labelled_files(root, GlanceAndFocus.class_keys(), split="calib")
    images = stack([central_square(item.load().image) for item in items])
    data = TensorSet(images, torch.tensor([item.label for item in items]))
    print(f"{len(items)} labelled images read in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    policy = LearnedPolicy()
    trainer = GlanceThenFocus(policy).requires_grad_(False)
    policy.requires_grad_(True)

    def fused_likelihood(log_probabilities: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(log_probabilities[0], labels)

    schedule = Schedule(epochs=options.epochs or EPOCHS, batch_size=25, peak_lr=0.02, weight_decay=1e-4)
    *_, (accuracy,) = fit(
        FrozenNorms(trainer),
        fused_likelihood,
        data,
        data,
        augmented_views,
        schedule,
        checkpoint_path(GlanceAndFocus.name),
        options.device,
        options.resume,
    )
    model = GlanceAndFocus(policy, trainer.net)
    return save_weights(
        model.name,
        policy.state_dict(),
        model.about,
        model.flops_full,
        model.default_point,
        {"calib_accuracy_glance_and_one_focus": f"{accuracy:.4f}"},
    )
