"""The Compare page's pieces on traces of tiny untrained networks: families, decisions, savings, pictures."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import encode, pattern

from dynviz.compare import compare, decision_text, family_of, savings_by_family
from dynviz.inputs import load_image
from dynviz.models.msdnet import MSDNet, MSDNetClassifier, MSDNetConfig
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.models.skip import SkipNetwork, SkipResNetCifar
from dynviz.runtime import inference
from dynviz.trace import BlockRecord, ExitRecord, FocusRecord, FrameRecord, NodeRecord
from dynviz.viz.compare import HEIGHT, STRIP, decision_picture, savings_chart
from dynviz.viz.parameters import expert_colors
from dynviz.zoo import create_model, tiny_config


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


def test_every_family_s_saving_is_written_beside_its_bar_and_within_the_axis():
    figure = savings_chart({"early exit": 0.609, "static network": 0.0, "dynamic parameters": -0.026})
    bars = figure.data[0]
    assert list(bars.text) == ["", "0.0%", "60.9%"]  # the bars run from the largest cost to the largest saving
    assert [a.text for a in figure.layout.annotations] == ["-2.6%"]  # right of zero: left are the names
    low, high = figure.layout.xaxis.range
    assert low < -2.6 and high > 60.9 * 1.15  # room for the longest bar's figure


def test_the_decision_picture_keeps_the_photo_s_aspect_and_draws_one_cell_per_unit(traces):
    image, (exits, skipping) = traces
    picture = decision_picture(image.image, skipping)
    assert picture.size == (HEIGHT * 96 // 64, HEIGHT + STRIP + 2)
    strip = [picture.getpixel((x, HEIGHT + STRIP)) for x in range(picture.width)]
    assert len(set(strip)) >= 2  # ran and skipped blocks (θ = 0.99 skips some, the ungated ones always run)
    assert decision_picture(image.image, exits).size == picture.size


def test_a_clip_s_row_says_which_frames_were_looked_at_and_draws_a_cell_per_frame(tmp_path):
    import random

    import numpy as np

    from dynviz.clips import slideshow, write_clip
    from dynviz.video import load_video

    frames, cuts = slideshow([pattern(160, 120, seed=1), pattern(160, 120, seed=9)], (96, 72), random.Random(0), 8)
    write_clip(frames, tmp_path / "clip.mp4")
    video = load_video((tmp_path / "clip.mp4").read_bytes(), "clip.mp4")
    model = create_model("skip_frames_lite", pretrained=False, **tiny_config("skip_frames_lite"))
    with inference():
        trace = model.analyze(video, {"delta": 1.0})
    assert family_of((FrameRecord,)).page == "pages/video.py"
    assert (
        decision_text(trace)
        == f"looked at 2 of {video.frame_count} frames, glanced at {video.frame_count - 2}, found 1 cuts"
    )
    picture = np.asarray(decision_picture(video.frame(0).image, trace))
    assert picture.shape[1] == round(96 * HEIGHT / 72)
    strip = picture[HEIGHT + 3]  # the top of the strip: coloured only where a cell is full
    assert len({tuple(p) for p in strip}) >= 2  # full cells where frames were looked at, half cells elsewhere


@pytest.mark.parametrize(
    "name", ["moe_vit_cifar", "condconv_resnet_cifar", "dcn_resnet_cifar", "dat_cifar", "dvt_cifar"]
)
def test_the_pictures_show_experts_kernels_sampling_points_and_token_grids(traces, name):
    image, _ = traces
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, **tiny_config(name))
    with inference():
        trace = model.analyze(image)
    picture = np.asarray(decision_picture(image.image, trace)).astype(int)
    plain = np.asarray(decision_picture(image.image, dataclasses.replace(trace, records=()))).astype(int)
    changed = np.abs(picture[:HEIGHT] - plain[:HEIGHT]).sum(-1) > 0
    strip = {tuple(p) for p in picture[HEIGHT + STRIP].tolist()}
    if name == "condconv_resnet_cifar":  # one cell per expert kernel, in its colour; the photo untouched
        assert not changed.any()
        experts = len(trace.records[0].weights)
        assert {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in expert_colors(experts)} <= strip
    else:  # tokens tinted by their expert, the last deformable layer's samples or the last token grid, on the photo
        assert changed.any()
