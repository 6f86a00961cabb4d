"""Benchmark: training throughput (images/s) of one step of the shared CIFAR loop, per CIFAR model.

    python bench/train_speed.py [--device cpu|cuda] [--steps N] [--models NAME ...] [--baseline]

Each model's training network (untrained: the speed does not depend on the weights) takes
``--steps`` timed steps of the shared loop (:class:`dynviz.train.loop.TrainingStep`: whole-batch
augmentation, channels-last, bf16 autocast where the processor has bf16 units, SGD update) on
random 32×32 images, eager and compiled (torch.compile), after two warm-up steps whose time
(the compile, for the compiled path) is printed apart. ``--baseline`` adds the step as it was
before this benchmark existed (a Python loop over the images for the crops): the before and
after, in one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dynviz.models import channel_gating, dynconv, skip  # noqa: E402
from dynviz.models.cifar import normalize  # noqa: E402
from dynviz.models.condconv import condconv_resnet  # noqa: E402
from dynviz.models.dat import DeformableVisionTransformer  # noqa: E402
from dynviz.models.dcn import deformable_resnet  # noqa: E402
from dynviz.models.dvt import DVT, DVTConfig, PlainCascadeConfig  # noqa: E402
from dynviz.models.moe import MoEVisionTransformer, balance_regularizer  # noqa: E402
from dynviz.models.msdnet import MSDNet  # noqa: E402
from dynviz.models.ranet import RANet  # noqa: E402
from dynviz.models.resnet_cifar import DEPTHS, ResNetCifar, resnet_name  # noqa: E402
from dynviz.models.vit import VisionTransformer  # noqa: E402
from dynviz.runtime import every_core, reuse_freed_memory  # noqa: E402
from dynviz.train.cifar import PADDING, prepare, schedule  # noqa: E402
from dynviz.train.gated import TARGET_RATES, decision_penalty  # noqa: E402
from dynviz.train.loop import Schedule, TrainingStep, TrainOptions  # noqa: E402
from dynviz.train.losses import exit_losses, self_distilled_exit_losses  # noqa: E402

NETWORKS = {  # each CIFAR recipe's training network, as its recipe builds it (a test checks that none is missing)
    **{resnet_name(depth): functools.partial(ResNetCifar, depth) for depth in DEPTHS},
    "msdnet_cifar": MSDNet,
    "ranet_cifar": RANet,
    "skip_resnet_cifar": lambda: skip.SkipNetwork(ResNetCifar(32)),
    "channel_gate_resnet_cifar": lambda: channel_gating.ChannelGatedNetwork(ResNetCifar(32)),
    "dynconv_resnet_cifar": lambda: dynconv.DynConvNetwork(ResNetCifar(32)),
    "dcn_resnet_cifar": deformable_resnet,
    "condconv_resnet_cifar": condconv_resnet,
    "vit_cifar": VisionTransformer,
    "dat_cifar": DeformableVisionTransformer,
    "moe_vit_cifar": MoEVisionTransformer,
    "dvt_cifar": lambda: DVT(DVTConfig()),
    "dvt_plain_cifar": lambda: DVT(PlainCascadeConfig()),
}
REGULARIZERS = {"moe_vit_cifar": balance_regularizer}
MULTI_EXIT = ("msdnet_cifar", "ranet_cifar", "dvt_cifar", "dvt_plain_cifar")


def looped_prepare(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The augmentation as it was: one crop per image in a Python loop."""
    size = batch.shape[-1]
    padded = F.pad(batch, (PADDING,) * 4)
    offsets = torch.randint(0, 2 * PADDING + 1, (len(batch), 2), generator=generator).tolist()
    batch = torch.stack([p[:, y : y + size, x : x + size] for p, (y, x) in zip(padded, offsets)])
    flip = torch.rand(len(batch), generator=generator) < 0.5
    return normalize(torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch))


def images_per_second(name: str, shared: Schedule, device: str, steps: int, baseline: bool) -> tuple[float, float]:
    """(images/s over the timed steps, seconds of the two warm-up steps)."""
    net = NETWORKS[name]()
    loss = self_distilled_exit_losses if name in MULTI_EXIT else exit_losses
    regularizer = decision_penalty(net, TARGET_RATES[name]) if name in TARGET_RATES else REGULARIZERS.get(name)
    step = TrainingStep(net, loss, looped_prepare if baseline else prepare, shared, steps + 2, device, regularizer)
    batch = shared.batch_size
    images = torch.randint(0, 256, ((steps + 2) * batch, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, ((steps + 2) * batch,), device=device)
    generator = torch.Generator().manual_seed(0)
    net.train()
    timings = []
    for i in range(steps + 2):
        start = time.perf_counter()
        step(images[i * batch : (i + 1) * batch], labels[i * batch : (i + 1) * batch], generator)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return batch * steps / sum(timings[2:]), sum(timings[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--baseline", action="store_true", help="also time the step as it was before")
    args = parser.parse_args()
    shared = schedule(TrainOptions(None))
    reuse_freed_memory()  # as the train command does
    with every_core():
        print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, batch {shared.batch_size}")
        print(f"{'model':<28}{'before':>10}{'eager':>10}{'compiled':>10}   {'compile time':>12}   (images/s)")
        for name in args.models:
            before = images_per_second(name, shared, args.device, args.steps, True)[0] if args.baseline else None
            eager, _ = images_per_second(
                name, dataclasses.replace(shared, compile=False), args.device, args.steps, False
            )
            compiled, warm_up = images_per_second(
                name, dataclasses.replace(shared, compile=True), args.device, args.steps, False
            )
            print(
                f"{name:<28}{before or float('nan'):>10.0f}{eager:>10.0f}{compiled:>10.0f}   {warm_up:>10.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
