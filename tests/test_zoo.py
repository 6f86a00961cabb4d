"""Every registered model, as the zoo builds it: its traces hold only the record kinds it declares, every kind
is registered, a trace round-trips through JSON, and its settings are its knobs. Once in the tiny configuration
each model registers (untrained, fast), once with the bundled weights (slow)."""

import dataclasses
import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, pattern

from dynviz.cards import against_twins, load_card
from dynviz.clips import write_clip
from dynviz.inputs import load_image
from dynviz.runtime import inference
from dynviz.trace import RECORD_TYPES, Trace
from dynviz.video import load_video
from dynviz.viz.tradeoff import label_positions, twins_chart
from dynviz.zoo import (
    VIDEO,
    accepts,
    create_model,
    declared_records,
    dynamic_models,
    list_models,
    tiny_config,
)


@functools.cache
def small_clip():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small.mp4"
        write_clip([np.asarray(pattern(80, 60, seed=i)) for i in range(6)], path)
        return load_video(path.read_bytes(), "small.mp4")


def check(name: str, model) -> None:
    if accepts(name) == VIDEO:
        image = small_clip()
    else:
        image = load_image(encode(pattern(80, 60, seed=3), "PNG"), "small.png")
    with inference():
        trace = model.analyze(image)
    declared = set(declared_records(name))
    assert {type(record) for record in trace.records} <= declared
    assert all(RECORD_TYPES[kind.kind] is kind for kind in declared)
    assert Trace.from_json(trace.to_json()) == trace
    assert trace.settings.keys() <= {knob.name for knob in model.knobs()}
    assert model.default_point in model.operating_points()


@pytest.mark.parametrize("name", list_models(only_served=False))
def test_a_tiny_untrained_model_emits_the_records_it_declares_and_its_trace_round_trips(name):
    check(name, create_model(name, pretrained=False, **tiny_config(name)))


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_a_bundled_model_emits_the_records_it_declares_and_its_trace_round_trips(name):
    check(name, create_model(name))


def test_bundled_weights_come_in_one_configuration():
    with pytest.raises(ValueError, match="pretrained=False"):
        create_model("resnet20_cifar", depth=8)
    assert create_model("resnet20_cifar", pretrained=False, depth=8).name == "resnet8_cifar"


def test_every_dynamic_model_is_set_against_its_static_twin_on_the_same_images():
    rows = {row.model: row for row in against_twins()}
    assert set(rows) == {name for name in dynamic_models() if load_card(name).evaluation}
    for row in rows.values():
        assert row.twin_point.mean_flops == pytest.approx(load_card(row.model).flops_full, rel=0.01)
    # A twin's own card where it is measured on the same images (it may have been retrained since) ...
    resnet20 = load_card("resnet20_cifar")
    assert rows["condconv_resnet_cifar"].twin_point == resnet20.point(resnet20.default_point)
    # ... the network measured beside it where not (Lite0 on every frame of the clips) ...
    assert rows["frame_exit_lite"].twin_point == load_card("frame_exit_lite").evaluation.baselines[0]
    # ... and an early-exit network against itself with every exit run.
    assert rows["msdnet_cifar"].twin == "msdnet_cifar, every exit"
    assert rows["msdnet_cifar"].flops_share < 0.5
    assert {row.survey_family for row in rows.values()} == {"sample-wise", "spatial-wise", "temporal-wise"}


def test_the_labels_of_two_models_at_the_same_place_on_homes_chart_do_not_overlap():
    rows = {row.model: row for row in against_twins()}
    twin = rows["msdnet_cifar"].twin_point
    near = [
        dataclasses.replace(rows["msdnet_cifar"], model=name, point=dataclasses.replace(twin, mean_flops=flops))
        for name, flops in (("first", 0.45 * twin.mean_flops), ("second", 0.46 * twin.mean_flops))
    ]
    far = dataclasses.replace(near[0], model="far", point=dataclasses.replace(twin, mean_flops=0.9 * twin.mean_flops))
    figure = twins_chart([*near, far])
    positions = dict(zip(figure.data[0].text, figure.data[0].textposition))
    assert {positions["first"], positions["second"]} == {"top center", "bottom center"}
    assert positions["far"] == "top center"


def test_a_label_on_homes_chart_moves_off_the_reference_lines_and_inside_the_plot():
    points = {"left": (10.0, 1.0), "just_under_the_line": (50.0, -0.3), "rightmost_model_name": (110.0, -1.0)}
    points |= {"highest": (30.0, 3.0), "lowest": (60.0, -6.0)}
    positions = label_positions(points, lines=(100, 0))
    assert positions["left"] == "top center"
    assert positions["just_under_the_line"] == "bottom center"  # above it, the label would sit on y = 0
    assert positions["rightmost_model_name"] != "middle right"  # it would run off the plot's right edge
