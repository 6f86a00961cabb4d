"""Benchmark: what channel gating can reach on an unchanged Lite0, with each photo's true channel contributions
in place of gates.

    python bench/channel_oracle.py --data IMAGENET_DIR [--split calib]

For every expanded channel of every MBConv block, its contribution s_c (the mean distance from its mean,
times its projection column's norm: ``dynviz.models.channel_gating.contributions``) is measured on the photo
itself, and channels are switched off by it: the 20% that contribute least in each block, holding 0 or their
means, then every channel under a share of its block's mean contribution (what ``lite0_channels``' gates learn
to predict, at several shares). Prints top-1 and the mean share of Lite0's FLOPs for each rule, priced as
``lite0_channels`` prices its inputs (its gates and the folding of the means included: 1.01x with every channel on).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dynviz.data import labelled_files  # noqa: E402
from dynviz.models.channel_gating import (  # noqa: E402
    ChannelGatedNetwork,
    Lite0Channels,
    contributions,
    masked_block,
)
from dynviz.models.efficientnet_lite import lite_input  # noqa: E402
from dynviz.runtime import every_core  # noqa: E402

BATCH = 26
Rule = Callable[[torch.Tensor], torch.Tensor]
"""Contributions [N, C] → the channels kept on, 0/1 [N, C]."""


def least_off(share: float) -> Rule:
    def rule(contribution: torch.Tensor) -> torch.Tensor:
        kept = round((1 - share) * contribution.shape[1])
        return (contribution >= contribution.topk(kept, 1).values[:, -1:]).float()

    return rule


def relative(share: float) -> Rule:
    return lambda contribution: (contribution >= share * contribution.mean(1, keepdim=True)).float()


def oracle(
    model: Lite0Channels, batches: list[torch.Tensor], labels: torch.Tensor, rule: Rule, fills: dict[int, torch.Tensor]
) -> tuple[float, float]:
    """Top-1 and the mean share of the static FLOPs with channels switched off by ``rule``, holding ``fills``."""
    layers = {layer.block: layer for layer in model.layers}
    answers, spent = [], []
    for x in batches:
        cost = torch.full((len(x),), float(model.fixed_flops))
        x = model.net.backbone.stem(x)
        for i, block in enumerate(model.net.backbone.blocks):
            if i not in layers:
                x = block(x)
                continue
            on = rule(contributions(block, x, model.net.fill(i)))
            cost += layers[i].flops * on.sum(1) / layers[i].channels
            x = masked_block(block, x, on, fills[i])
        answers.append(model.net.backbone.classify(x).argmax(1))
        spent.append(cost / model.flops_full)
    return (torch.cat(answers) == labels).float().mean().item(), torch.cat(spent).mean().item()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the ImageNet sample folder")
    parser.add_argument("--split", default="calib", choices=("all", "calib", "test"))
    args = parser.parse_args()
    model = Lite0Channels(ChannelGatedNetwork(Lite0Channels.backbone()))  # Lite0's weights; its gates go unused
    files = labelled_files(args.data, model.class_keys(), args.split)
    images = torch.cat([lite_input(f.load(), model.probe_size).tensor for f in files])
    labels = torch.tensor([f.label for f in files])
    batches = list(images.split(BATCH))
    with torch.inference_mode(), every_core():  # batches of photos, no latency measured: every core
        model.net.set_fills_to_means(batches)
        means = {layer.block: model.net.fill(layer.block) for layer in model.layers}
        zeros = {i: torch.zeros_like(mean) for i, mean in means.items()}
        print(f"Lite0 with each photo's true channel contributions, {len(files)} photos ({args.split}):")
        for name, rule, fills in (
            ("every channel on", relative(0.0), means),
            ("20% least contributing off, at 0", least_off(0.2), zeros),
            ("20% least contributing off, at their means", least_off(0.2), means),
            *(
                (f"under {share:.0%} of the block's mean off, at their means", relative(share), means)
                for share in (0.2, 0.3, 0.4, 0.5)
            ),
        ):
            accuracy, flops = oracle(model, batches, labels, rule, fills)
            print(f"  {name:<52} top-1 {accuracy:6.1%}   {flops:.2f}x Lite0's FLOPs", flush=True)
