"""The CIFAR multi-exit networks (MSDNet, RANet) on tiny, untrained configurations: cost accounting, knobs,
memo reuse; MSDNet's grid of nodes; RANet's resolutions."""

import itertools

import pytest
import torch
from conftest import encode, labelled_patterns, pattern

from dynviz.cards import ANYTIME, BUDGET, STATIC, OperatingPoint
from dynviz.cost import count_macs
from dynviz.evaluate import evaluate
from dynviz.inputs import load_image
from dynviz.models.base import forced_exit
from dynviz.models.cifar import cifar_input
from dynviz.models.msdnet import MSDNet, MSDNetClassifier, MSDNetConfig
from dynviz.models.ranet import RANet, RANetClassifier, RANetConfig
from dynviz.models.resnet_cifar import StaticResNetCifar
from dynviz.trace import ExitRecord, NodeRecord, Trace
from dynviz.zoo import create_model, ready_to_serve, tiny_config

EXITS = MSDNetConfig.tiny().exits
assert RANetConfig.tiny().exits == EXITS


def untrained(classifier: type):
    torch.manual_seed(0)
    return create_model(classifier.name, pretrained=False, **tiny_config(classifier.name))


@pytest.fixture(scope="module", params=[MSDNetClassifier, RANetClassifier])
def tiny(request):
    return untrained(request.param)


@pytest.fixture(scope="module")
def tiny_msdnet() -> MSDNetClassifier:
    return untrained(MSDNetClassifier)


@pytest.fixture(scope="module")
def cifar_photo():
    return load_image(encode(pattern(32, 32, seed=3), "PNG"), "tiny.png")


def forced(k: int) -> dict[str, float]:
    return {f"tau_{j + 1}": t for j, t in enumerate(forced_exit(EXITS, k))}


@pytest.mark.parametrize("k", range(EXITS))
def test_each_exit_costs_what_flop_counter_mode_counts_on_its_path(tiny, cifar_photo, k):
    with torch.inference_mode():
        counted = count_macs(lambda: tiny.analyze(cifar_photo, forced(k)))
    trace = tiny.analyze(cifar_photo, forced(k))
    assert trace.answered_at.index == k
    assert trace.cost.flops == counted
    assert trace.cost.breakdown == {p.name: p.flops for p in tiny.exit_parts[: k + 1]}


def test_exits_are_monotone_in_cost_and_the_first_is_cheap(tiny):
    cumulative = list(itertools.accumulate(p.flops for p in tiny.exit_parts))
    assert all(a < b for a, b in zip(cumulative, cumulative[1:]))
    full = MSDNetClassifier(MSDNet(), torch.ones(7), {"p": (0.5,) * 6}, "p")
    assert full.exit_parts[0].flops <= 0.2 * sum(p.flops for p in full.exit_parts)  # the paper's CIFAR layout


def test_nodes_after_the_exit_are_not_computed(tiny_msdnet, cifar_photo):
    memo = {}
    trace = tiny_msdnet.analyze(cifar_photo, forced(0), memo)
    nodes = trace.records_of(NodeRecord)
    assert {n.computed for n in nodes if n.block == 0} == {True}
    assert {n.computed for n in nodes if n.block > 0} == {False}
    assert set(k for k in memo if isinstance(k, int)) == {0}  # later blocks never ran
    assert [r.computed for r in trace.records_of(ExitRecord)] == [True] + [False] * (EXITS - 1)


def test_scales_are_dropped_with_depth_as_in_the_paper():
    config = MSDNetConfig()
    scales = [config.scales_at(layer)[1] for layer in range(1, config.layers + 1)]
    assert scales == sorted(scales, reverse=True) and scales[0] == 3 and scales[-1] == 1


def test_thresholds_move_the_exit(tiny, cifar_photo):
    memo = {}
    never = tiny.analyze(cifar_photo, {f"tau_{j + 1}": 1.0 for j in range(EXITS - 1)}, memo)
    always = tiny.analyze(cifar_photo, {f"tau_{j + 1}": 0.0 for j in range(EXITS - 1)}, memo)
    assert never.answered_at.index == EXITS - 1 and always.answered_at.index == 0
    assert always.cost.flops < never.cost.flops


def test_a_new_setting_reuses_the_exits_already_computed(tiny, cifar_photo):
    memo = {}
    tiny.analyze(cifar_photo, forced(EXITS - 1), memo)
    with torch.inference_mode():
        assert count_macs(lambda: tiny.analyze(cifar_photo, forced(1), memo)) == 0
    assert "frontier" not in memo  # no features are kept once the last block ran


def test_a_photo_is_cut_to_its_central_square_and_resized_with_a_note(tiny):
    trace = tiny.analyze(load_image(encode(pattern(120, 80), "JPEG"), "wide.jpg"))
    assert trace.answered_at.view_box == (20.0, 0.0, 100.0, 80.0)
    assert any("resized from 120×80 to 32×32" in note for note in trace.notes)


def test_the_trace_round_trips_through_json_with_its_grid(tiny_msdnet, cifar_photo):
    trace = tiny_msdnet.analyze(cifar_photo)
    again = Trace.from_json(trace.to_json())
    assert again == trace
    assert again.summary()["nodes"] == len(tiny_msdnet.net.nodes)


def test_ranet_answers_from_the_resolution_its_exit_saw(cifar_photo):
    torch.manual_seed(0)
    net = RANet(RANetConfig.tiny())
    ranet = ready_to_serve(RANetClassifier(net, torch.ones(EXITS), {"p": (0.5,) * (EXITS - 1)}, "p"))
    assert [p.resolution for p in ranet.exit_parts] == [8, 16, 32]
    for k in range(EXITS):
        trace = ranet.analyze(cifar_photo, forced(k))
        assert trace.summary()["exit_resolution"] == 8 << k
        with torch.inference_mode():
            expected = net(cifar_input(cifar_photo).tensor)[k][0].softmax(-1)
        assert trace.prediction.confidence == pytest.approx(float(expected.max()), abs=1e-5)


def test_eval_gives_exit_shares_to_the_exit_model_and_none_to_its_static_baseline(tiny_msdnet, tmp_path):
    files = labelled_patterns(tmp_path, range(3))
    middle = {"middle": OperatingPoint("middle", {})}
    points, baselines, _ = evaluate(tiny_msdnet, files, middle, baselines={"resnet": StaticResNetCifar(8)})
    assert len(points[0].exit_rates) == EXITS and sum(points[0].exit_rates) == pytest.approx(1.0)
    assert baselines[0].name == "resnet" and baselines[0].exit_rates == ()
    assert (points[0].kind, baselines[0].kind) == (BUDGET, STATIC)


def test_anytime_points_are_told_apart_by_what_they_do_not_by_their_name():
    thresholds = {"any name": forced_exit(EXITS, 1), "middle": (0.5,) * (EXITS - 1), "deep": (1.0,) * (EXITS - 1)}
    net = MSDNetClassifier.network(MSDNetConfig.tiny())
    points = MSDNetClassifier(net, torch.ones(EXITS), thresholds, "middle").operating_points()
    assert (points["any name"].kind, points["deep"].kind, points["middle"].kind) == (ANYTIME, ANYTIME, BUDGET)
