"""Benchmark: realised batch-1 speed-ups of layer skipping and channel gating against their FLOPs ratios.

    python bench/gating.py --data IMAGENET_DIR --cifar CIFAR_DIR [--cifar-images N]

For each gated model at its default θ against its static twin (ResNet-32 on the CIFAR-10 test split;
Lite0 on the test half of the ImageNet sample), one run on one machine through ``python -m dynviz
analyze`` prints the mean FLOPs and wall time of both, the FLOPs ratio and the realised speed-up.
Targets: realised / FLOPs ratio ≥ 0.8 for block skipping and ≥ 0.6 for channel gating. Then the layer-skipping
models on batches of 32, where each image decides for itself (``SkipNetwork.run_batch``: a block runs on the
images whose gate says so), against the dense backbone on the same batches, both fused. Channel selection and
pixel masks have no batched executed path: their images differ in which channels or positions run, and they
run image by image.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from early_exit import dynamic_vs_static, photos_and_cifar  # noqa: E402

from dynviz.cost import stopwatch  # noqa: E402
from dynviz.fused import inference_path  # noqa: E402
from dynviz.inputs import load_image_file  # noqa: E402
from dynviz.models.gates import DEFAULT_THRESHOLD  # noqa: E402
from dynviz.runtime import inference  # noqa: E402
from dynviz.zoo import create_model  # noqa: E402

BATCH = 32
ROUNDS = 3


def batched(name: str, files: list[str], what: str) -> None:
    """Per-image time of a layer-skipping model's batched executed path against its dense backbone, on batches
    of :data:`BATCH` taking turns, the best of :data:`ROUNDS` passes over the files each."""
    model = create_model(name)
    images = [load_image_file(f) for f in files]
    flops = statistics.fmean(model.analyze(image).cost.flops for image in images)
    batches = torch.cat([model.network_input(image).tensor for image in images]).split(BATCH)
    dense = inference_path(model.net.backbone, batches[0].shape)
    spent = {"dense": [], "skipping": []}
    with inference():
        for _ in range(ROUNDS):
            for run, forward in (
                ("dense", dense),
                ("skipping", lambda x: model.net.run_batch(x, DEFAULT_THRESHOLD, dense)),
            ):
                with stopwatch() as watch:
                    for x in batches:
                        forward(x)
                spent[run].append(watch.ms / len(images))
    dense_ms, skipping_ms = min(spent["dense"]), min(spent["skipping"])
    flops_ratio, speedup = model.flops_full / flops, dense_ms / skipping_ms
    print(f"\n{name} on {len(images)} images in batches of {BATCH}, fused ({what}):")
    print(f"  dense {dense_ms:.2f} ms per image, skipping {skipping_ms:.2f} ms per image")
    print(f"  FLOPs ratio {flops_ratio:.2f}x; realised speed-up {speedup:.2f}x ({speedup / flops_ratio:.2f})")


if __name__ == "__main__":
    photos, cifar = photos_and_cifar(__doc__)
    for dynamic, static, files, what in (
        ("skip_resnet_cifar", "resnet32_cifar", cifar, "CIFAR-10 test split; target realised/theoretical ≥ 0.8"),
        ("channel_gate_resnet_cifar", "resnet32_cifar", cifar, "CIFAR-10 test split; target ≥ 0.6"),
        ("lite0_skip", "lite0", photos, "ImageNet sample, test half; target ≥ 0.8"),
        ("lite0_channels", "lite0", photos, "ImageNet sample, test half; target ≥ 0.6"),
    ):
        dynamic_vs_static(files, dynamic, static, what=what)
    batched("skip_resnet_cifar", cifar, "CIFAR-10 test split")
    batched("lite0_skip", photos, "ImageNet sample, test half")
