"""DVT: a cascade of transformers over ever finer token grids, with feature and relationship reuse (tiny
untrained configurations, generated inputs)."""

import dataclasses

import pytest
import torch
from conftest import tiny

from dynviz.cards import ANYTIME, STATIC, PointResult
from dynviz.cost import count_macs
from dynviz.evaluate import match_best_baseline
from dynviz.models.dvt import (
    DVT,
    CascadeState,
    DVTConfig,
    PlainCascadeConfig,
    resize_tokens,
    upsampling,
)
from dynviz.runtime import inference
from dynviz.trace import TokenGridRecord


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_each_stage_costs_what_flop_counter_mode_counts_on_the_executed_path(photo, tau):
    model = tiny("dvt_cifar")
    with inference():
        trace = model.analyze(photo, {"tau_1": tau})
        counted = count_macs(lambda: model.analyze(photo, {"tau_1": tau}))
    stages = len(trace.records_of(TokenGridRecord))
    assert trace.cost.flops == counted == sum(part.flops for part in model.exit_parts[:stages])
    assert stages == (1 if tau == 0.0 else 2)


def test_later_stages_are_not_run_when_an_earlier_one_answers(photo):
    model = tiny("dvt_cifar")
    calls = []
    hook = model.net.blocks[1].register_forward_hook(lambda *_: calls.append(1))
    try:
        with inference():
            early = model.analyze(photo, {"tau_1": 0.0})
            assert not calls
            model.analyze(photo, {"tau_1": 1.0})
    finally:
        hook.remove()
    assert early.answered_at.index == 0 and calls == [1]


@pytest.mark.parametrize("config", [DVTConfig.tiny(), PlainCascadeConfig.tiny()])
def test_reuse_changes_the_later_stage_s_input_and_its_absence_does_not(config):
    torch.manual_seed(0)
    net = DVT(config).eval()
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        upstream = net.blocks[0](net.start(image))
        disturbed = CascadeState(image, upstream.tokens + 1.0, [a + 1.0 for a in upstream.logits], upstream.grid)
        first, second = (net.blocks[1](state).tokens for state in (upstream, disturbed))
    assert (not torch.allclose(first, second)) == config.reuse


def test_upsampling_is_the_bilinear_resize_of_the_patches_and_keeps_the_class_token():
    tokens = torch.randn(2, 1 + 16, 5)
    resized = upsampling(4, 6) @ tokens
    torch.testing.assert_close(resized[:, 0], tokens[:, 0])
    torch.testing.assert_close(resized[:, 1:], resize_tokens(tokens[:, 1:], 6))
    torch.testing.assert_close(upsampling(4, 4), torch.eye(17))


def test_each_computed_stage_records_its_grid_and_what_it_was_handed(photo):
    with inference():
        reused = tiny("dvt_cifar").analyze(photo, {"tau_1": 1.0}).records_of(TokenGridRecord)
        plain = tiny("dvt_plain_cifar").analyze(photo, {"tau_1": 1.0}).records_of(TokenGridRecord)
    grids = DVTConfig.tiny().grids
    assert [r.grid for r in reused] == list(grids) and [len(r.class_attention) for r in reused] == [
        g * g for g in grids
    ]
    assert all(0 < sum(r.class_attention) < 1 for r in reused)  # the rest goes to the class token itself
    assert reused[0].handed_over == () and len(reused[1].handed_over) == grids[1] ** 2
    assert all(r.handed_over == () for r in plain)


def test_the_plain_cascade_differs_only_in_reuse():
    plain_config = dataclasses.asdict(PlainCascadeConfig.tiny())
    assert plain_config == dataclasses.asdict(DVTConfig.tiny()) | {"reuse": False}
    plain, reused = tiny("dvt_plain_cifar"), tiny("dvt_cifar")
    assert plain.exit_parts[0].flops == reused.exit_parts[0].flops  # the first stage has nothing to reuse
    assert plain.exit_parts[1].flops < reused.exit_parts[1].flops
    assert plain.flops_full == reused.flops_full  # both against the densest transformer alone


def test_the_card_matches_dvt_against_the_static_vit_not_against_its_ablation():
    """The plain cascade is among DVT's baselines to compare reuse with; what DVT must reach is the ViT."""
    dvt = [PointResult("budget", {}, 0.77, 0.98, 29e6, 3.0), PointResult("late", {}, 0.80, 0.99, 60e6, 5.0)]
    vit = PointResult("vit_cifar", {}, 0.769, 0.985, 58e6, 2.8, kind=STATIC)
    plain = PointResult("dvt_plain_cifar, anytime: exit 3", {}, 0.79, 0.99, 116e6, 7.0, kind=ANYTIME)
    match = match_best_baseline(dvt, [vit, plain])
    assert (match.baseline, match.point, match.point_flops) == ("vit_cifar", "budget", 29e6)
