"""Recipes that produce the bundled weights: ``python -m dynviz train NAME``, and the CIFAR zoo in the order
its recipes depend on one another: ``python -m dynviz train-all``."""

import functools
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from dynviz.models.dvt import DVTClassifier, PlainCascadeClassifier
from dynviz.models.msdnet import MSDNetClassifier
from dynviz.models.ranet import RANetClassifier
from dynviz.train import (
    distill,
    frame_exit,
    gated,
    gfnet,
    lite_cascade,
    multi_exit,
    scratch,
)
from dynviz.train.cifar import STATIC_ENSEMBLE, static_ensemble
from dynviz.train.loop import TrainOptions

RECIPES = {
    "lite_cascade": lite_cascade.calibrate,
    "frame_exit_lite": frame_exit.calibrate_frame_exit,
    "adaframe_lite": frame_exit.calibrate_adaframe,
    "msdnet_cifar": functools.partial(multi_exit.train, MSDNetClassifier, teacher=static_ensemble),
    "ranet_cifar": functools.partial(multi_exit.train, RANetClassifier, teacher=static_ensemble),
    "dvt_cifar": functools.partial(multi_exit.train, DVTClassifier),
    "dvt_plain_cifar": functools.partial(multi_exit.train, PlainCascadeClassifier),
    "skip_resnet_cifar": gated.train_skip,
    "channel_gate_resnet_cifar": gated.train_channel_gate,
    "dynconv_resnet_cifar": gated.train_dynconv,
    "lite0_skip": distill.train_lite0_skip,
    "lite0_dynconv": distill.train_lite0_dynconv,
    "gfnet_lite0": gfnet.train,
    "lite0_channels": distill.train_lite0_channels,
    **scratch.RECIPES,
}

CIFAR_ZOO: dict[str, tuple[str, ...]] = {
    "resnet32_cifar": (),
    **{name: ("resnet32_cifar",) for name in gated.TARGET_RATES},
    "resnet20_cifar": (),
    "dcn_resnet_cifar": ("resnet20_cifar",),
    "condconv_resnet_cifar": (),
    "vit_cifar": (),
    "moe_vit_cifar": ("vit_cifar",),
    "dat_cifar": (),
    "dvt_cifar": (),
    "dvt_plain_cifar": (),
    "resnet14_cifar": (),
    "resnet8_cifar": (),
    "resnet56_cifar": (),
    "msdnet_cifar": STATIC_ENSEMBLE,
    "ranet_cifar": STATIC_ENSEMBLE,
}
"""Every CIFAR-10 model with the models its recipe starts from (the gated ones fine-tune the trained ResNet-32,
DCN the trained ResNet-20, the mixture of experts the vision transformer, MSDNet and RANet learn from ResNet-32
and -56 at the end),
in the order ``train-all`` takes them: ResNet-32 and the models fine-tuned from it first, so that a run stopped
part-way leaves the gated models and their twin trained alike."""


def training_order(zoo: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The models of ``zoo`` with each one after those it starts from, otherwise in the order given."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ValueError(f"recipes depend on each other in a circle: {' → '.join((*path, name))}")
        if name not in order:
            for dependency in zoo[name]:
                visit(dependency, (*path, name))
            order.append(name)

    for name in zoo:
        visit(name, ())
    return order


class Job(Protocol):
    def poll(self) -> int | None:
        """None while the job runs, then its exit status (as :class:`subprocess.Popen`'s)."""


def train_in_order(
    zoo: Mapping[str, tuple[str, ...]], names: list[str], start: Callable[[str], Job], jobs: int, wait_s: float = 1.0
) -> str | None:
    """Starts each of ``names`` (in the order given) once every model of ``names`` it starts from has finished,
    with at most ``jobs`` running at a time. Returns the first model whose job failed, after the jobs running
    then have finished (none is started after a failure), or None when every job succeeded."""
    waiting, running, finished = list(names), dict[str, Job](), set[str]()
    failed: str | None = None
    while running or (waiting and failed is None):
        for name, job in list(running.items()):
            if (status := job.poll()) is not None:
                del running[name]
                if status:
                    failed = failed or name
                else:
                    finished.add(name)
        ready = [n for n in waiting if all(d in finished or d not in names for d in zoo[n])]
        if failed is None:
            for name in ready[: jobs - len(running)]:
                waiting.remove(name)
                running[name] = start(name)
        if running:
            time.sleep(wait_s)
    return failed


__all__ = ["CIFAR_ZOO", "RECIPES", "TrainOptions", "train_in_order", "training_order"]
