import json
from importlib import resources
from pathlib import Path

import pytest

from dynviz.cards import load_card
from dynviz.inputs import load_image
from dynviz.models import lite_cascade
from dynviz.zoo import create_model


def exit_taken(trace) -> int:
    return trace.summary()["exit"]


def test_decisions_are_monotone_in_the_first_threshold(cascade, photo):
    memo = {}
    exits, costs = [], []
    for tau in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0, 1.01):
        trace = cascade.analyze(photo, {"tau_1": tau, "tau_2": 0.0}, memo)
        exits.append(exit_taken(trace))
        costs.append(trace.cost.flops)
    assert exits == sorted(exits) and exits[0] == 0 and exits[-1] == 1
    assert costs == sorted(costs)


def test_a_stage_stops_exactly_when_its_confidence_reaches_the_threshold(cascade, photo):
    confidence = cascade.analyze(photo, {"tau_1": 1.01, "tau_2": 1.01}).records[0].confidence
    assert exit_taken(cascade.analyze(photo, {"tau_1": confidence})) == 0
    assert exit_taken(cascade.analyze(photo, {"tau_1": confidence + 1e-4})) >= 1


def test_moving_a_threshold_reuses_the_stages_already_computed(cascade, photo, monkeypatch):
    memo = {}
    cascade.analyze(photo, {"tau_1": 1.01, "tau_2": 1.01}, memo)
    runs = []
    original = lite_cascade.run_view
    monkeypatch.setattr(lite_cascade, "run_view", lambda *args: runs.append(args) or original(*args))
    for tau in (0.0, 0.5, 1.01):
        cascade.analyze(photo, {"tau_1": tau, "tau_2": 0.3}, memo)
    assert runs == []


def test_stages_after_the_answer_are_not_run(cascade, photo):
    memo = {}
    trace = cascade.analyze(photo, {"tau_1": 0.0}, memo)
    assert list(memo) == [0]
    assert [r.computed for r in trace.records] == [True, False, False]
    assert [r.taken for r in trace.records] == [True, False, False]
    assert trace.cost.latency_ms == pytest.approx(trace.records[0].latency_ms)


def test_knob_defaults_are_the_cards_default_operating_point(cascade):
    card = load_card("lite_cascade")
    assert {k.name: k.default for k in cascade.knobs()} == pytest.approx(
        card.point(card.default_point).settings, abs=1e-3
    )


def test_the_card_meets_the_default_operating_point_target():
    card = load_card("lite_cascade")
    default = card.point(card.default_point)
    lite2 = next(b for b in card.evaluation.baselines if b.name == "lite2")
    assert card.evaluation.split == "test"
    assert default.top1 >= lite2.top1 - 0.005
    assert default.mean_flops <= 0.70 * lite2.mean_flops


def test_a_clear_photo_stops_at_the_first_stage_with_the_right_answer(cascade):
    espresso = resources.files("dynviz.examples").joinpath("espresso.jpg").read_bytes()
    trace = cascade.analyze(load_image(espresso, "espresso.jpg"))
    assert trace.prediction.label == "espresso"
    assert exit_taken(trace) == 0


GOLDEN = Path(__file__).parent / "golden_lite0.json"


def lite0_logits_on_pattern():
    from conftest import encode, pattern

    return create_model("lite0").analyze(load_image(encode(pattern(), "PNG"), "pattern.png")).prediction


def test_lite0_golden_output():
    """timm-style golden test: a stored input and output catch silent changes to the model
    (padding, BatchNorm eps, pre-processing). The input is conftest.pattern() as PNG; the stored
    output was written by ``json.dump`` of this prediction's top-5 when the model was first checked."""
    golden = json.loads(GOLDEN.read_text())
    prediction = lite0_logits_on_pattern()
    assert [c.index for c in prediction.top] == golden["indices"]
    assert [c.probability for c in prediction.top] == pytest.approx(golden["probabilities"], abs=1e-4)
