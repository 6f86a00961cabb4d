"""Recipe for ``lite_cascade``: no gradient steps, only calibration.

On the ``calib`` half of the ImageNet sample and of any labelled ``--photos``
(the ImageNet validation images): run every stage on every image, fit one
temperature per stage, then one set of exit thresholds per harm cap (see
:mod:`dynviz.train.exits`). The thresholds of each cap are one operating point;
"harm ≤ 0.4%" is the default.

The first stage is Lite0 at its native 224 px. At 160 px (0.23× Lite2's FLOPs
against 0.45×) it answered 77% of ImageNet validation images right against 82%,
and was confident on enough of the wrong ones that the cascade, calibrated on
the sample, fell 1 point short of Lite2 at 0.70× its FLOPs on photos outside the
project. Calibrating on validation images as well made every threshold stricter
and the cascade dearer at the same accuracy (0.81× for 89.2% on the sample's
test half), so the thresholds are fitted on the sample's calib half.
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from dynviz.cards import PRETRAINED, ModelCard, sha256_of
from dynviz.inputs import load_image_file
from dynviz.models.lite_cascade import ABOUT, REFERENCE, LiteCascade
from dynviz.progress import progress
from dynviz.train.exits import HARM_CAPS, calibrate_exits, harm_point
from dynviz.train.loop import TrainOptions, calibration_files, replaced_atomically

DEFAULT_CAP = 0.004


def calibrate(options: TrainOptions) -> ModelCard:
    files = calibration_files(options, LiteCascade.class_keys())
    stages = len(LiteCascade.stages)
    model = LiteCascade(torch.ones(stages), {"uncalibrated": (1.0,) * (stages - 1)}, "uncalibrated")
    logits = [[] for _ in range(stages)]
    for item in progress(files, len(files), "running every stage on the calibration half"):
        image, memo = load_image_file(item.path), {}
        for k in range(stages):
            logits[k].append(model.stage_output(image, k, memo).logits)
    labels = torch.tensor([f.label for f in files])
    stage_logits = [torch.stack(rows) for rows in logits]
    temperatures, thresholds = calibrate_exits(stage_logits, labels, [model.stage_flops(k) for k in range(stages)])
    weights = PRETRAINED / f"{LiteCascade.name}.safetensors"
    with replaced_atomically(weights) as partial:
        save_file(
            {"temperatures": temperatures, "thresholds": thresholds},
            partial,
            metadata={
                "operating_points": json.dumps([harm_point(c) for c in HARM_CAPS]),
                "calibration_images": str(len(files)),
            },
        )
    return ModelCard(
        LiteCascade.name,
        ABOUT,
        model.baseline_flops()[REFERENCE],
        harm_point(DEFAULT_CAP),
        weights.name,
        sha256_of(weights),
    )
