"""The Compare page's pieces on traces of tiny untrained networks: families, decisions, savings, pictures."""

import pytest
import torch
from conftest import encode, pattern

from dynviz.compare import compare, decision_text, family_of, savings_by_family
from dynviz.inputs import load_image
from dynviz.models.msdnet import MSDNet, MSDNetClassifier, MSDNetConfig
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.models.skip import SkipNetwork, SkipResNetCifar
from dynviz.runtime import inference
from dynviz.trace import BlockRecord, ExitRecord, FocusRecord, NodeRecord
from dynviz.viz.compare import HEIGHT, STRIP, decision_picture, savings_chart


@pytest.fixture(scope="module")
def traces():
    torch.manual_seed(0)
    image = load_image(encode(pattern(96, 64), "PNG"), "wide.png")
    config = MSDNetConfig.tiny()
    exits = MSDNetClassifier(MSDNet(config).eval(), torch.ones(config.exits), {"p": (0.0,) * (config.exits - 1)}, "p")
    skipping = SkipResNetCifar(SkipNetwork(ResNetCifar(14)).eval())
    with inference():
        return image, [exits.analyze(image), skipping.analyze(image, {"threshold": 0.99})]


FAMILIES = {"exits": family_of((ExitRecord, NodeRecord)), "skipping": family_of((BlockRecord,))}


def test_each_model_gets_the_family_of_the_decisions_it_declares(traces):
    _, (exits, skipping) = traces
    assert FAMILIES["exits"].name == "early exit" and FAMILIES["exits"].page == "pages/early_exit.py"
    assert family_of((ExitRecord,), "spatial-wise · resolution adaptation").name == "resolution adaptation"
    assert family_of((ExitRecord, FocusRecord)).name == "glance and focus"  # even when it answered at the glance
    assert family_of(()).name == "static network"
    assert FAMILIES["skipping"].name == "layer skipping" and FAMILIES["skipping"].model_key == "skip_model"
    assert decision_text(exits).startswith("answered at exit 1 of")
    assert decision_text(skipping).startswith("ran ") and decision_text(skipping).endswith(" blocks")


def test_rows_come_largest_saving_first_and_families_average_their_models(traces):
    _, found = traces
    rows = compare(found, {found[0].model: FAMILIES["exits"], found[1].model: FAMILIES["skipping"]})
    assert [r.saved for r in rows] == sorted((r.saved for r in rows), reverse=True)
    assert all(r.saved == pytest.approx(1 - r.flops / r.flops_full) for r in rows)
    savings = savings_by_family(rows)
    assert set(savings) == {"early exit", "layer skipping"}
    figure = savings_chart(savings)
    assert figure.layout.title.text == "How much did each family save on this input?"
    assert sorted(figure.data[0].x) == sorted(100 * v for v in savings.values())


def test_the_decision_picture_keeps_the_photo_s_aspect_and_draws_one_cell_per_unit(traces):
    image, (exits, skipping) = traces
    picture = decision_picture(image.image, skipping)
    assert picture.size == (HEIGHT * 96 // 64, HEIGHT + STRIP + 2)
    strip = [picture.getpixel((x, HEIGHT + STRIP)) for x in range(picture.width)]
    assert len(set(strip)) >= 2  # ran and skipped blocks (θ = 0.99 skips some, the ungated ones always run)
    assert decision_picture(image.image, exits).size == picture.size
