"""Recipe for ``lite_cascade``: no gradient steps, only calibration.

On the ``calib`` half of the ImageNet sample: run every stage on every image,
fit one temperature per stage, then one set of exit thresholds per harm cap
(see :mod:`dynviz.train.exits`). The thresholds of each cap are one operating
point; "harm ≤ 0.4%" (about one image in 250) is the default.
"""

from __future__ import annotations

import itertools
import json

import torch
from safetensors.torch import save_file

from dynviz.cards import PRETRAINED, ModelCard, sha256_of
from dynviz.data import labelled_files
from dynviz.inputs import load_image_file
from dynviz.models.lite_cascade import ABOUT, REFERENCE, LiteCascade
from dynviz.progress import progress
from dynviz.train.exits import fit_temperature, search_thresholds
from dynviz.train.loop import TrainOptions, require_data

HARM_CAPS = (0.0, 0.004, 0.01, 0.02, 0.04, 0.08)
DEFAULT_CAP = 0.004


def point_name(cap: float) -> str:
    return f"harm ≤ {100 * cap:.1f}%"


def calibrate(options: TrainOptions) -> ModelCard:
    files = labelled_files(require_data(options, "the ImageNet sample folder"), LiteCascade.class_keys(), split="calib")
    stages = len(LiteCascade.stages)
    model = LiteCascade(torch.ones(stages), {"uncalibrated": (1.0,) * (stages - 1)}, "uncalibrated")
    logits = [[] for _ in range(stages)]
    for item in progress(files, len(files), "running every stage on the calibration half"):
        image, memo = load_image_file(item.path), {}
        for k in range(stages):
            logits[k].append(model.stage_output(image, k, memo).logits)
    labels = torch.tensor([f.label for f in files])
    stage_logits = [torch.stack(rows) for rows in logits]
    temperatures = torch.tensor([fit_temperature(z, labels) for z in stage_logits])
    probabilities = [(z / t).softmax(-1) for z, t in zip(stage_logits, temperatures)]
    confidences = torch.stack([p.max(-1).values for p in probabilities])
    correct = torch.stack([p.argmax(-1) == labels for p in probabilities])
    cumulative = torch.tensor(
        list(itertools.accumulate(model.stage_flops(k) for k in range(stages))), dtype=torch.float64
    )
    thresholds = torch.tensor([search_thresholds(confidences, correct, cumulative, cap) for cap in HARM_CAPS])
    weights = PRETRAINED / f"{LiteCascade.name}.safetensors"
    save_file(
        {"temperatures": temperatures, "thresholds": thresholds},
        weights,
        metadata={
            "operating_points": json.dumps([point_name(c) for c in HARM_CAPS]),
            "calibration_images": str(len(files)),
        },
    )
    return ModelCard(
        LiteCascade.name,
        ABOUT,
        model.baseline_flops()[REFERENCE],
        point_name(DEFAULT_CAP),
        weights.name,
        sha256_of(weights),
    )
