"""Benchmark: realised batch-1 speed-ups of the spatial models against their FLOPs ratios.

    python bench/spatial.py --data IMAGENET_DIR --cifar CIFAR_DIR [--cifar-images N]

One run on one machine through ``python -m dynviz analyze``, each model at its default operating point
against its static twin: DynConv's sparse path (gather, compute, scatter) against the dense ResNet-32 and
Lite0, glance and focus (both policies) and RANet against the static network they replace. Prints mean
FLOPs and wall time, the FLOPs ratio and the realised speed-up. Target for the sparse paths: realised /
FLOPs ratio ≥ 0.5.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from early_exit import dynamic_vs_static, photos_and_cifar  # noqa: E402

if __name__ == "__main__":
    photos, cifar = photos_and_cifar(__doc__)
    dynamic_vs_static(cifar, "dynconv_resnet_cifar", "resnet32_cifar", what="CIFAR-10 test split; target ≥ 0.5")
    dynamic_vs_static(photos, "lite0_dynconv", "lite0", what="ImageNet sample, test half; target ≥ 0.5")
    for policy in ("0", "1"):
        dynamic_vs_static(
            photos, "gfnet_lite0", "lite0", what="ImageNet sample, test half", dynamic_settings=(f"policy={policy}",)
        )
    dynamic_vs_static(cifar, "ranet_cifar", "resnet32_cifar", what="CIFAR-10 test split")
