"""Every registered model, as the zoo builds it: its traces hold only the record kinds it declares, every kind
is registered, and a trace round-trips through JSON."""

import pytest
from conftest import encode, pattern

from dynviz.inputs import load_image
from dynviz.runtime import inference
from dynviz.trace import RECORD_TYPES, Trace
from dynviz.zoo import create_model, declared_records, list_models

pytestmark = pytest.mark.slow  # the bundled weights of every model


@pytest.mark.parametrize("name", list_models())
def test_a_model_emits_the_records_it_declares_and_its_trace_round_trips(name):
    image = load_image(encode(pattern(80, 60, seed=3), "PNG"), "small.png")
    model = create_model(name)
    with inference():
        trace = model.analyze(image)
    declared = set(declared_records(name))
    assert {type(record) for record in trace.records} <= declared
    assert all(RECORD_TYPES[kind.kind] is kind for kind in declared)
    assert Trace.from_json(trace.to_json()) == trace
    assert trace.settings.keys() <= {knob.name for knob in model.knobs()}
