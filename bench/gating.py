"""Benchmark: realised batch-1 speed-ups of layer skipping and channel gating against their FLOPs ratios.

    python bench/gating.py --data IMAGENET_DIR --cifar CIFAR_DIR [--cifar-images N]

For each gated model at its default θ against its static twin (ResNet-32 on the CIFAR-10 test split;
Lite0 on the test half of the ImageNet sample), one run on one machine through ``python -m dynviz
analyze`` prints the mean FLOPs and wall time of both, the FLOPs ratio and the realised speed-up.
Targets: realised / FLOPs ratio ≥ 0.8 for block skipping and ≥ 0.6 for channel gating.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from early_exit import dynamic_vs_static, photos_and_cifar  # noqa: E402

if __name__ == "__main__":
    photos, cifar = photos_and_cifar(__doc__)
    for dynamic, static, files, what in (
        ("skip_resnet_cifar", "resnet32_cifar", cifar, "CIFAR-10 test split; target realised/theoretical ≥ 0.8"),
        ("channel_gate_resnet_cifar", "resnet32_cifar", cifar, "CIFAR-10 test split; target ≥ 0.6"),
        ("lite0_skip", "lite0", photos, "ImageNet sample, test half; target ≥ 0.8"),
        ("lite0_channels", "lite0", photos, "ImageNet sample, test half; target ≥ 0.6"),
    ):
        dynamic_vs_static(files, dynamic, static, what=what)
