"""Recipe for ``frame_exit_lite``: no gradient steps, only calibration.

Clips are made from the ``calib`` half of the ImageNet sample (:mod:`dynviz.clips`: a shot of each photo;
the slideshows, whose frames disagree, are left out). The backbone runs on the first :data:`STEPS` frames of
each clip in the coarse-to-fine order, and one temperature T is fitted (temperature scaling, Guo et al.,
ICML 2017) to the mean logits z̄_t after t = 1, 2, 4, 8 frames together: the confidences the exit gate
compares with τ after any number of frames.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from dynviz.cards import PRETRAINED, ModelCard, sha256_of
from dynviz.data import labelled_clips_from_photos
from dynviz.models.frame_exit import ABOUT, FrameExitLite
from dynviz.models.frames import coarse_to_fine, frame_view
from dynviz.progress import progress
from dynviz.runtime import inference
from dynviz.train.exits import fit_temperature
from dynviz.train.loop import TrainOptions, require_data

STEPS = (1, 2, 4, 8)


def calibrate(options: TrainOptions) -> ModelCard:
    root = require_data(options, "the ImageNet sample folder")
    model = FrameExitLite(1.0)
    logits, labels = [], []
    with tempfile.TemporaryDirectory(prefix="dynviz-clips-") as folder:
        clips = [c for c in labelled_clips_from_photos(root, model.class_keys(), "calib", Path(folder)) if not c.cuts]
        for clip in progress(clips, len(clips), "running the first frames of every calibration clip"):
            video, memo = clip.load(), {}
            with inference():
                frames = [
                    frame_view(model.backbone, video, i, model.resolution, memo).logits
                    for i in coarse_to_fine(video.frame_count)[: max(STEPS)]
                ]
            logits += [torch.stack(frames[:t]).mean(0) for t in STEPS]
            labels += [clip.label] * len(STEPS)
    temperature = fit_temperature(torch.stack(logits), torch.tensor(labels))
    weights = PRETRAINED / f"{FrameExitLite.name}.safetensors"
    save_file({"temperature": torch.tensor(temperature)}, weights, metadata={"calibration_clips": str(len(clips))})
    print(f"temperature {temperature:.3f} from {len(clips)} clips", flush=True)
    return ModelCard(FrameExitLite.name, ABOUT, 0.0, FrameExitLite.default_point, weights.name, sha256_of(weights))
