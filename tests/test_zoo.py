"""Every registered model, as the zoo builds it: its traces hold only the record kinds it declares, every kind
is registered, a trace round-trips through JSON, and its settings are its knobs. Once in the tiny configuration
each model registers (untrained, fast), once with the bundled weights (slow)."""

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, pattern

from dynviz.clips import write_clip
from dynviz.inputs import load_image
from dynviz.runtime import inference
from dynviz.trace import RECORD_TYPES, Trace
from dynviz.video import load_video
from dynviz.zoo import (
    VIDEO,
    accepts,
    create_model,
    declared_records,
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
