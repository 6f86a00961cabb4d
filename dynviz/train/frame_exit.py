"""Recipes for the video models that stop when sure (``frame_exit_lite``, ``adaframe_lite``): no gradient
steps, only calibration.

Clips are made from the ``calib`` half of the ImageNet sample (:mod:`dynviz.clips`: a shot of each photo;
the slideshows, whose frames disagree, are left out). The backbone runs on the first :data:`STEPS` frames
each model would look at, in its own order, and one temperature T is fitted (temperature scaling, Guo et
al., ICML 2017) to the mean logits z̄_t after t = 1, 2, 4, 8 frames together: the confidences the stop rule
compares with τ after any number of frames.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from dynviz.cards import PRETRAINED, ModelCard, sha256_of
from dynviz.data import labelled_clips_from_photos
from dynviz.models.adaframe import (
    BUDGET,
    DEFAULT_GLANCE,
    AdaFrameLite,
    glance_refined_order,
)
from dynviz.models.base import Memo
from dynviz.models.efficientnet_lite import center_crop_box
from dynviz.models.frame_exit import FrameExitLite
from dynviz.models.frames import coarse_to_fine, frame_view
from dynviz.progress import progress
from dynviz.runtime import inference
from dynviz.train.exits import fit_temperature
from dynviz.train.loop import TrainOptions, replaced_atomically, require_data
from dynviz.video import InputVideo

STEPS = (1, 2, 4, 8)

FirstLooks = Callable[[InputVideo, Memo], list[torch.Tensor]]
"""(clip, memo) → the logits of the first max(STEPS) frames the model would look at, in its order."""


def fit_stop_temperature(model, first_looks: FirstLooks, options: TrainOptions) -> ModelCard:
    """Fit T on the calibration clips and write ``pretrained/<name>.safetensors`` with the card's head."""
    root = require_data(options, "the ImageNet sample folder")
    logits, labels = [], []
    with tempfile.TemporaryDirectory(prefix="dynviz-clips-") as folder:
        clips = [c for c in labelled_clips_from_photos(root, model.class_keys(), "calib", Path(folder)) if not c.cuts]
        for clip in progress(clips, len(clips), "looking at the first frames of every calibration clip"):
            with inference():
                frames = first_looks(clip.load(), {})
            logits += [torch.stack(frames[:t]).mean(0) for t in STEPS]
            labels += [clip.label] * len(STEPS)
    temperature = fit_temperature(torch.stack(logits), torch.tensor(labels))
    weights = PRETRAINED / f"{model.name}.safetensors"
    with replaced_atomically(weights) as partial:
        save_file({"temperature": torch.tensor(temperature)}, partial, metadata={"calibration_clips": str(len(clips))})
    print(f"temperature {temperature:.3f} from {len(clips)} clips", flush=True)
    return ModelCard(model.name, model.about, 0.0, model.default_point, weights.name, sha256_of(weights))


def calibrate_frame_exit(options: TrainOptions) -> ModelCard:
    model = FrameExitLite(1.0)

    def first_looks(video: InputVideo, memo: Memo) -> list[torch.Tensor]:
        order = coarse_to_fine(video.frame_count)[: max(STEPS)]
        return [frame_view(model.backbone, video, i, model.resolution, memo).logits for i in order]

    return fit_stop_temperature(model, first_looks, options)


def calibrate_adaframe(options: TrainOptions) -> ModelCard:
    model = AdaFrameLite(1.0)

    def first_looks(video: InputVideo, memo: Memo) -> list[torch.Tensor]:
        glances = model.glances(video, DEFAULT_GLANCE, memo)
        order = glance_refined_order(glances.probabilities.max(-1).values.tolist(), BUDGET)[: max(STEPS)]
        view = center_crop_box(*video.size)
        return [model.focus(video, i, view, memo)[0] for i in order]

    return fit_stop_temperature(model, first_looks, options)
