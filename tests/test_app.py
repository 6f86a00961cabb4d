"""Every page, rendered by streamlit's AppTest on generated and bundled inputs."""

import json
import re
from pathlib import Path

import pytest
from conftest import encode, pattern, tiny
from safetensors import safe_open
from streamlit.testing.v1 import AppTest

from dynviz.cards import PRETRAINED, against_twins, load_card
from dynviz.clips import EXAMPLE_CLIPS
from dynviz.zoo import IMAGE, VIDEO, list_models

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page, by title."""
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return {figure["layout"]["title"]["text"]: figure for figure in figures}


def pictures(at: AppTest) -> list[str]:
    """The captions of the pictures on the page (photos with decisions or attributions drawn on them)."""
    return [caption for image in at.get("image") for caption in image.captions]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_home_lists_every_bundled_model_from_its_card(app):
    table = app.dataframe[0].value
    assert {"lite0", "lite1", "lite2", "lite_cascade"} <= set(table["model"])
    assert "dynamic" in app.markdown[0].value


def test_home_sets_every_dynamic_model_against_its_twin(app):
    figure = charts(app)["Does each dynamic network pay off against the static network it is built on?"]
    shown = {name for family in figure["data"] for name in family["text"]}
    assert shown == {row.model for row in against_twins()}
    msdnet = next(family for family in figure["data"] if "msdnet_cifar" in family["text"])
    assert msdnet["name"] == "sample-wise" and msdnet["x"][msdnet["text"].index("msdnet_cifar")] < 100


def test_early_exit_page_shows_the_answer_the_stages_and_the_cost(app):
    app.switch_page("pages/early_exit.py").run()
    assert not app.exception
    assert metric(app, "Answer") == "espresso"  # the first bundled example
    assert metric(app, "Stopped at stage") == "1 of 3"
    figures = charts(app)
    assert {"Where did it stop?", "What did it answer? (top-5)", "What did it cost?"} <= set(figures)
    stages = figures["Where did it stop?"]["data"][0]
    assert stages["text"][0].endswith("answered here") and stages["text"][1:] == ["not run", "not run"]
    assert any(caption.startswith("Where did Lite0 @ 224 px look") for caption in pictures(app))


def test_the_card_and_the_stage_table_are_built_only_once_opened(app):
    app.switch_page("pages/early_exit.py").run()
    folded = {expander.label: expander for expander in app.expander}
    assert {"Model card", "Stage by stage (table and downloads)"} <= set(folded)
    assert not folded["Model card"].children and not folded["Stage by stage (table and downloads)"].children
    app.session_state["model_card"] = True  # what a click on the expander sets
    app.session_state["table_and_downloads"] = True
    app.run()
    folded = {expander.label: expander for expander in app.expander}
    assert any("Measured" in m.value for m in folded["Model card"].markdown)
    targets = next(m.value for m in folded["Model card"].markdown if m.value.startswith("**Targets**"))
    assert "within 0.5 pt of lite2" in targets and ":green[met]" in targets  # lite_cascade's, from the cards
    assert "  - on imagenet-val (test, 644 images): :green[met]" in targets  # and checked on other photos
    stages = folded["Stage by stage (table and downloads)"].dataframe[0].value
    assert len(stages) == 3  # lite_cascade's three stages


def test_a_card_tells_its_caveats_where_its_model_has_some(app):
    def card_lines(page: str) -> list[str]:
        app.switch_page(page).run()
        return [m.value for m in {e.label: e for e in app.expander}["Model card"].markdown]

    app.session_state["model_card"] = True
    skipping = card_lines("pages/layer_skipping.py")  # opens on lite0_skip, a dynamic Lite0
    assert any(line.startswith("**Caveats**") and "lite0_resized" in line for line in skipping)
    assert not any(line.startswith("**Caveats**") for line in card_lines("pages/early_exit.py"))  # lite_cascade


def test_moving_the_thresholds_re_decides(app):
    app.switch_page("pages/early_exit.py").run()
    app.slider(key="lite_cascade:tau_1").set_value(1.0)
    app.slider(key="lite_cascade:tau_2").set_value(1.0).run()
    assert metric(app, "Stopped at stage") == "3 of 3"
    stages = charts(app)["Where did it stop?"]["data"][0]
    assert "not run" not in stages["text"]
    share = next(m.delta for m in app.metric if m.label.startswith("FLOPs"))
    assert int(share.split("%")[0]) > 100  # all three stages together cost more than the static Lite2


def test_uploads_a_broken_and_a_generated_image_keep_the_good_one(app):
    app.sidebar.radio(key="source").set_value("Upload").run()
    app.file_uploader(key="uploads").set_value(
        [
            ("broken.png", b"\x89PNG\r\n\x1a\n broken", "image/png"),
            ("mine.png", encode(pattern(seed=5), "PNG"), "image/png"),
        ]
    ).run()
    assert any(error.value.startswith("broken") and "png: " in error.value for error in app.sidebar.error)
    assert app.session_state["dynviz_input"].name == "mine.png"
    app.switch_page("pages/early_exit.py").run()
    assert not app.exception
    assert app.session_state["dynviz_input"].name == "mine.png"
    assert {"Where did it stop?", "What did it cost?"} <= set(charts(app))


def test_a_large_photo_is_read_smaller_and_the_sidebar_says_so(app, monkeypatch):
    from dynviz import inputs

    monkeypatch.setattr(inputs, "DECODED_SIDE", 64)  # as a 12-megapixel photo is against the real 1024
    app.sidebar.radio(key="source").set_value("Upload").run()
    app.file_uploader(key="uploads").set_value([("large.jpg", encode(pattern(300, 200), "JPEG"), "image/jpeg")]).run()
    assert app.session_state["dynviz_input"].size == (150, 100)
    assert any(c.value.startswith("300×200 pixels, read at 150×100") for c in app.sidebar.caption)


def test_msdnet_on_the_early_exit_page_shows_its_grid_and_the_32_pixel_view(app):
    app.switch_page("pages/early_exit.py").run()
    app.selectbox(key="exit_model").select("msdnet_cifar").run()
    assert not app.exception
    figures = charts(app)
    assert {"Where did it stop?", "What did the network compute? (scales × depth)"} <= set(figures)
    assert any("resized from" in info.value and "32×32" in info.value for info in app.info)  # a big photo
    app.slider(key="msdnet_cifar:tau_1").set_value(0.0).run()
    assert metric(app, "Stopped at stage") == "1 of 7"
    grid = charts(app)["What did the network compute? (scales × depth)"]["data"][0]
    computed = [c != "#c7c7c7" for c in grid["marker"]["color"]]
    assert sum(computed) == grid["x"].count(0) + sum(1 for x in grid["x"] if 1 <= x <= 4)  # block 1 only


def test_the_gallery_groups_the_bundled_sample_by_exit_and_sends_an_image_to_analysis(app):
    app.switch_page("pages/gallery.py").run()
    assert not app.exception
    assert metric(app, "Images") == "500"
    figures = charts(app)
    assert {"Where did the images leave?", "Which exit does each class take?"} <= set(figures)
    assert sum(figures["Where did the images leave?"]["data"][0]["y"]) == 500
    heatmap = figures["Which exit does each class take?"]["data"][0]
    assert [sum(row) for row in heatmap["z"]] == [50] * 10
    assert [bool(tab.children) for tab in app.tabs[:2]] == [True, False]  # only the open exit draws its images
    app.session_state["gallery_exit"] = app.tabs[1].label
    app.run()
    assert [bool(tab.children) for tab in app.tabs[:2]] == [False, True]
    picked = app.selectbox(key="gallery_pick").value
    app.button(key="gallery_send").click().run()
    assert not app.exception
    assert app.session_state["dynviz_input"].digest == picked.item.image.digest
    assert app.session_state["exit_model"] == "msdnet_cifar"


def test_the_trade_off_explorer_moves_the_operating_point_and_lists_exit_changes(app):
    app.switch_page("pages/tradeoffs.py").run()
    app.selectbox(key="tradeoff_model").select("msdnet_cifar").run()
    assert not app.exception
    chart = charts(app)["How much accuracy for how much computation?"]
    names = {series["name"] for series in chart["data"]}
    assert {"msdnet_cifar (dynamic)", "static networks", "best static network at each cost"} <= names
    assert {"resnet20_cifar", "resnet56_cifar"} <= set(
        next(s for s in chart["data"] if s["name"] == "static networks")["text"]
    )
    low, high = chart["layout"]["yaxis"]["range"]  # opens on where the networks differ, the statics inside
    assert all(low <= y <= high for y in next(s for s in chart["data"] if s["name"] == "static networks")["y"])
    assert low > min(y for series in chart["data"] for y in series["y"])  # a gated curve's cheapest points below
    assert "How did each model learn? (validation accuracy after each epoch)" not in charts(app)  # until opened
    app.session_state["how_they_trained"] = True
    app.run()
    learning = charts(app)["How did each model learn? (validation accuracy after each epoch)"]["data"]
    with safe_open(PRETRAINED / "resnet32_cifar.safetensors", "pt") as weights:
        history = json.loads(weights.metadata()["validation_history"])
    resnet32 = next(line for line in learning if line["name"] == "resnet32_cifar")
    assert resnet32["y"] == pytest.approx([100 * exits[-1] for exits in history]) and len(history) == 40
    assert any("Move the operating point" in caption.value for caption in app.caption)  # at the default: no gallery
    cheapest = min(load_card("msdnet_cifar").evaluation.points, key=lambda p: p.mean_flops)
    app.select_slider(key="tradeoff_point:msdnet_cifar").set_value(cheapest.name).run()
    assert not app.exception
    # Seven exits' shares: the first as the value (it fits the metric), the later ones beneath it.
    exits = next(m for m in app.metric if m.label == "Answered at each exit")
    assert exits.value == f"{cheapest.exit_rates[0]:.0%} at the first"
    assert exits.delta == "then " + " · ".join(f"{r:.0%}" for r in cheapest.exit_rates[1:])
    assert any("images change" in md.value for md in app.markdown)


def test_layer_skipping_page_shows_the_blocks_the_gate_attribution_and_the_class_paths(app):
    app.switch_page("pages/layer_skipping.py").run()
    assert app.selectbox(key="skip_model").value == "lite0_skip"  # a photo opens on the photo model
    app.selectbox(key="skip_model").set_value("skip_resnet_cifar").run()
    assert not app.exception
    figures = charts(app)
    grid = next(f for title, f in figures.items() if title.startswith("Which blocks ran?"))
    probabilities = grid["data"][0]
    ran = sum(text != "always" and text.endswith("ran") for text in probabilities["text"])
    always = probabilities["text"].count("always")
    assert metric(app, "Blocks run") == f"{ran + always}/15"
    whiskers = next(trace for trace in grid["data"] if trace["type"] == "scatter")  # the card's spread of each gate
    assert len(whiskers["x"]) == 15 - always and "10000 cifar10 test images" in whiskers["hovertext"][0]
    theoretical = float(metric(app, "Theoretical speed-up (FLOPs)").removesuffix("×"))
    assert theoretical == pytest.approx(15 / (ran + always), rel=0.3)  # blocks cost alike; stem and gates extra
    assert float(metric(app, "Realised speed-up (latency, this server)").removesuffix("×")) > 0
    assert not any(caption.startswith("Which pixels pushed block") for caption in pictures(app))  # on demand only
    app.toggle(key="skip_resnet_cifar:attribute").set_value(True).run()
    assert any(caption.startswith("Which pixels pushed block") for caption in pictures(app))
    heatmap = figures["Does each class take its own path? Share of each block that ran"]["data"][0]
    assert len(heatmap["y"]) == 10 and len(heatmap["x"]) == 15  # the card's ten classes × fifteen blocks


def test_raising_the_gate_threshold_skips_blocks_on_the_page(app):
    app.switch_page("pages/layer_skipping.py").run()
    app.selectbox(key="skip_model").set_value("skip_resnet_cifar").run()
    before = int(metric(app, "Blocks run").split("/")[0])
    app.slider(key="skip_resnet_cifar:threshold").set_value(0.99).run()
    assert int(metric(app, "Blocks run").split("/")[0]) < before


def test_channel_gating_page_compares_two_inputs(app):
    app.switch_page("pages/channel_gating.py").run()
    assert not app.exception
    assert app.selectbox(key="channel_model").value == "lite0_channels"  # not a CIFAR model, first by name
    figures = charts(app)
    assert {"How much of each layer ran?", "Which channels ran, layer by layer?"} <= set(figures)
    layers = figures["How much of each layer ran?"]["data"]
    varying = next(trace for trace in layers if trace["name"].startswith("share of the layer's gates that decide"))
    assert len(varying["x"]) == len(layers[0]["x"]) and all(0 <= share <= 1 for share in varying["y"])
    difference = next(f for title, f in figures.items() if title.startswith("Which channels differ"))
    assert len(difference["data"][0]["y"]) == len(figures["How much of each layer ran?"]["data"][0]["x"])
    assert metric(app, "Channels computed").endswith("%")
    assert metric(app, "Realised speed-up (latency, this server)").endswith("×")


def test_trade_offs_show_the_gated_models_beside_msdnet_and_the_resnets(app):
    app.switch_page("pages/tradeoffs.py").run()
    app.session_state["how_they_trained"] = True
    app.selectbox(key="tradeoff_model").set_value("skip_resnet_cifar").run()
    assert not app.exception
    figures = charts(app)
    curves = figures["How much accuracy for how much computation?"]["data"]
    names = {trace.get("name") for trace in curves}
    assert {"skip_resnet_cifar (dynamic)", "channel_gate_resnet_cifar (dynamic)", "msdnet_cifar (dynamic)"} <= names
    colors = {t["name"].removesuffix(" (dynamic)"): t["marker"]["color"] for t in curves if "(dynamic)" in t["name"]}
    assert len(colors) > 8 and len(set(colors.values())) == len(colors)  # more models than exit colours, none shared
    learning = figures["How did each model learn? (validation accuracy after each epoch)"]["data"]
    assert all(colors[t["name"]] == t["line"]["color"] for t in learning if t["name"] in colors)  # one colour each
    assert metric(app, "Top-1 at this point") == f"{load_card('skip_resnet_cifar').point('θ = 0.5').top1:.1%}"


def test_spatial_page_draws_each_block_s_mask_and_its_speed_up(app):
    app.switch_page("pages/spatial.py").run()
    assert app.selectbox(key="mask_model").value == "lite0_dynconv"  # not a CIFAR model, first by name
    app.selectbox(key="mask_model").set_value("dynconv_resnet_cifar").run()
    assert not app.exception
    figures = charts(app)
    # It opens on the first block that computed positions (the bundled masks switch block 1 off entirely).
    title, overlay = next((t, f) for t, f in figures.items() if t.startswith("Where did block"))
    assert re.match(r"Where did block \d+ compute\? [1-9]\d* of 1024 positions", title)
    assert overlay["data"][1]["z"]["shape"] == "32, 32"  # that block's output grid, over the photo
    assert (
        len(
            figures[
                "How sparse was each block? " + metric(app, "Positions computed") + " of positions computed overall"
            ]["data"][0]["x"]
        )
        == 15
    )
    densities = figures[
        "How sparse was each block? " + metric(app, "Positions computed") + " of positions computed overall"
    ]
    varying = next(trace for trace in densities["data"] if trace.get("yaxis") == "y2")  # from the card
    assert len(varying["x"]) == 15 and all(0 <= share <= 1 for share in varying["y"])
    assert metric(app, "Theoretical speed-up (FLOPs)").endswith("×")
    assert metric(app, "Realised speed-up (latency, this server)").endswith("×")
    # Beside θ, how many of the positions its range can still switch (trained masks decide most of them firmly).
    positions = next(m.delta for m in app.metric if m.label == "Positions computed").split(" of ")[1]
    reach = next(c.value for c in app.caption if c.value.startswith("On this input"))
    within, decisions = re.match(r"On this input ([\d,]+) of the ([\d,]+) gated decisions", reach).groups()
    assert decisions.replace(",", "") == positions and int(within.replace(",", "")) <= int(positions)
    before = float(metric(app, "Positions computed").rstrip("%"))
    app.slider(key="dynconv_resnet_cifar:threshold").set_value(0.95).run()
    assert float(metric(app, "Positions computed").rstrip("%")) < before
    app.select_slider(key="dynconv_resnet_cifar:layer").set_value(14).run()
    assert any(title.startswith("Where did block 15 compute?") for title in charts(app))


def test_spatial_page_shows_both_glance_and_focus_policies_and_the_resolution_taken(app):
    app.switch_page("pages/spatial.py")
    app.session_state["spatial_view"] = "Regions"
    app.run()
    app.slider(key="gfnet_lite0:tau_1").set_value(1.0).run()
    app.slider(key="gfnet_lite0:tau_2").set_value(1.0).run()
    assert not app.exception
    figures = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    looked = [caption for caption in pictures(app) if caption.startswith("Where did it look?")]
    assert looked == ["Where did it look? The glance, then 2 focus steps"] * 2  # one picture per policy
    policies = {f["layout"]["title"]["text"] for f in figures if "patch's score" in f["layout"]["title"]["text"]}
    assert any("class-activation peak" in t for t in policies) and any("learned" in t for t in policies)
    assert not any(title.startswith("How sparse was each block?") for title in charts(app))  # one view at a time
    app.session_state["spatial_view"] = "Resolution"
    app.run()
    assert metric(app, "Answered from") in {"8×8 px", "16×16 px", "32×32 px"}


def test_compare_page_puts_every_model_in_one_table_largest_saving_first_with_each_family_s_saving(app):
    app.switch_page("pages/compare.py")
    app.session_state["compare_view"] = "The input chosen in the sidebar"
    app.run()
    assert not app.exception
    table = app.dataframe[0].value
    assert set(table["model"]) == set(list_models(accepting=IMAGE))  # a photo: every image model
    saved = list(table["FLOPs saved"])
    assert saved == sorted(saved, reverse=True)  # the largest saving first
    static = table[table["family"] == "static network"]
    assert (static["FLOPs saved"].abs() < 1e-6).all() and len(static) >= 4
    families = charts(app)["How much did each family save on this input?"]["data"][0]["y"]
    assert {"early exit", "layer skipping", "channel skipping", "pixel masks", "glance and focus"} <= set(families)


def test_ranet_on_the_early_exit_page_says_which_resolution_answered(app):
    app.switch_page("pages/early_exit.py").run()
    app.selectbox(key="exit_model").select("ranet_cifar").run()
    assert not app.exception
    stage = int(metric(app, "Stopped at stage").split()[0])
    side = 8 << (stage - 1)
    assert any(caption.startswith(f"Where did exit {stage} ({side}×{side} px) look") for caption in pictures(app))


def test_the_video_page_shows_which_frames_each_model_looked_at_and_the_knobs_move_it(app):
    app.radio(key="source").set_value("Example clips").run()
    app.selectbox(key="example_clip").set_value(next(c for c in EXAMPLE_CLIPS if "cuts" in c.title)).run()
    app.switch_page("pages/video.py").run()
    assert not app.exception
    figures = charts(app)  # adaframe_lite, the first: why it chose those frames, and why it stopped
    assert {"Which frames did the glance find most telling?", "When was it sure enough to stop?"} <= set(figures)
    looked, frames = metric(app, "Frames looked at").split(" of ")
    assert 1 <= int(looked) <= 16 and int(frames) == 216
    app.selectbox(key="video_model").set_value("frame_exit_lite").run()
    assert "When was it sure enough to stop?" in charts(app)
    looked, frames = metric(app, "Frames looked at").split(" of ")
    assert 1 <= int(looked) <= 16 and int(frames) == 216
    app.selectbox(key="video_model").set_value("skip_frames_lite").run()
    figures = charts(app)
    timeline = figures["What was on screen, frame by frame? (red lines: cuts found)"]
    assert len([s for s in timeline["layout"]["shapes"] if s["type"] == "line"]) == 2  # the clip's two cuts
    assert "Which frames changed enough to look again? (red: a cut)" in figures
    app.slider(key="skip_frames_lite:delta").set_value(0.0).run()
    assert metric(app, "Frames looked at") == "216 of 216"


def test_the_image_pages_take_the_chosen_frame_of_a_clip(app):
    app.radio(key="source").set_value("Example clips").run()
    app.switch_page("pages/early_exit.py").run()
    assert not app.exception
    assert app.session_state["dynviz_input"].name.endswith("frame 36 (1.50 s)")  # the middle of a 3-s clip
    assert metric(app, "Answer")
    app.slider(key="dynviz_video_frame").set_value(10).run()
    assert not app.exception
    assert "frame 10" in app.session_state["dynviz_input"].name


def test_compare_on_a_clip_runs_the_video_models_on_it_and_the_image_models_on_its_frame(app):
    app.radio(key="source").set_value("Example clips").run()
    app.switch_page("pages/compare.py").run()
    assert not app.exception
    clip_rows, frame_rows = (table.value for table in app.dataframe[:2])
    assert set(clip_rows["model"]) == set(list_models(accepting=VIDEO))
    assert all(text.startswith("looked at ") for text in clip_rows["what it decided"])
    assert set(frame_rows["model"]) == set(list_models(accepting=IMAGE))


DYNAMIC_PARAMETERS = ("dcn_resnet_cifar", "dat_cifar", "condconv_resnet_cifar", "moe_vit_cifar")


def serve_untrained(monkeypatch, names: tuple[str, ...]) -> None:
    """Offer ``names`` with their bundled weights where they are, else tiny and untrained (a page's behaviour
    does not depend on training)."""
    from dynviz import runtime, zoo

    pending = [name for name in names if not zoo.served(name)]
    monkeypatch.setattr(zoo, "served", lambda name, bundled=zoo.served: bundled(name) or name in pending)
    build = runtime.bundled_model
    monkeypatch.setattr(
        runtime.SERVER,
        "build",
        lambda name: tiny(name) if name in pending else build(name),
    )


@pytest.fixture
def parameter_models(monkeypatch):
    serve_untrained(monkeypatch, DYNAMIC_PARAMETERS)


@pytest.fixture
def dvt_models(monkeypatch):
    serve_untrained(monkeypatch, ("dvt_cifar", "dvt_plain_cifar"))


def test_dvt_on_the_early_exit_page_draws_each_stage_s_tokens_and_what_it_reused(dvt_models, app):
    app.switch_page("pages/early_exit.py").run()
    app.selectbox(key="exit_model").select("dvt_cifar").run()
    app.slider(key="dvt_cifar:tau_1").set_value(0.0).run()
    assert not app.exception
    titles = set(charts(app))
    assert any(title.startswith("Stage 1: ") and title.endswith("where did its class token look?") for title in titles)
    assert not any(title.startswith("Stage 2") for title in titles)  # never run
    thresholds = [s for s in app.slider if s.key.startswith("dvt_cifar:tau_")]  # the bundled cascade has 3 stages
    for slider in thresholds:
        slider.set_value(1.0)
    app.run()
    titles = set(charts(app))
    assert "Stage 2: what did<br>the previous stage hand over?" in titles
    stages = len(thresholds) + 1
    assert metric(app, "Stopped at stage") == f"{stages} of {stages}"  # no stage is sure enough: the last answers


def test_the_deformable_page_draws_a_position_s_samples_their_stack_and_the_field(parameter_models, app):
    app.switch_page("pages/deformable.py").run()
    app.selectbox(key="deformable_model").set_value("dcn_resnet_cifar").run()
    assert not app.exception
    assert metric(app, "Mean offset").endswith(" px")
    samples = next(f for t, f in charts(app).items() if t.endswith("where did this position's 9 samples move?"))
    assert any(caption.startswith("Effective sampling locations through 3 stacked layers") for caption in pictures(app))
    assert any("which way does each position look?" in caption for caption in pictures(app))
    before = next(trace["x"] for trace in samples["data"] if trace.get("name") == "regular grid")
    app.slider(key="dcn_resnet_cifar:column").set_value(0).run()
    samples = next(f for t, f in charts(app).items() if t.endswith("where did this position's 9 samples move?"))
    assert next(trace["x"] for trace in samples["data"] if trace.get("name") == "regular grid") < before
    layer = app.select_slider(key="dcn_resnet_cifar:layer")
    assert layer.value == len(layer.options) - 1  # the last deformable layer, by default

    app.selectbox(key="deformable_model").set_value("dat_cifar").run()
    assert not app.exception
    assert any(title.endswith("head 1: which sampled keys does this query attend to?") for title in charts(app))
    app.radio(key="dat_cifar:head").set_value(1).run()
    assert any(title.endswith("head 2: which sampled keys does this query attend to?") for title in charts(app))


def test_the_dynamic_parameters_page_shows_routing_experts_and_their_attribution(parameter_models, app):
    app.switch_page("pages/dynamic_parameters.py").run()
    app.selectbox(key="parameters_model").set_value("condconv_resnet_cifar").run()
    assert not app.exception
    assert metric(app, "Routing entropy").endswith(" nats")
    heatmaps = [f for f in charts(app).values() if f["data"][0]["type"] == "heatmap"]
    by_class = [f for f in heatmaps if f["layout"]["yaxis"].get("title", {}).get("text") == "true class (images)"]
    heatmaps = [f for f in heatmaps if f not in by_class]
    assert len(heatmaps) == 2  # the photo and a second image, side by side
    assert len(by_class) == (load_card("condconv_resnet_cifar") is not None)  # the card's routing by class
    assert heatmaps[0]["data"][0]["z"] != heatmaps[1]["data"][0]["z"]
    app.session_state["why_this_routing"] = True
    app.run()
    app.toggle(key="condconv_resnet_cifar:route:attribute").set_value(True).run()
    assert not app.exception
    assert any(caption.startswith("Which pixels raised expert 1 of") for caption in pictures(app))

    app.selectbox(key="parameters_model").set_value("moe_vit_cifar").run()
    assert not app.exception
    figures = charts(app)
    assert any(title.endswith("which expert did each token go to?") for title in figures)
    assert "How was the load spread over the experts?" in figures
    one = metric(app, "FLOPs (multiply–adds)")
    app.slider(key="moe_vit_cifar:per_token").set_value(2).run()
    assert metric(app, "FLOPs (multiply–adds)") != one  # two experts per token cost more
    app.session_state["why_this_expert"] = True
    app.run()
    app.toggle(key="moe_vit_cifar:token:attribute").set_value(True).run()
    assert any(caption.startswith("Which pixels sent token (4, 4)") for caption in pictures(app))


def test_a_newly_picked_photo_starts_its_prefetch_once_after_its_page_where_background_work_is_wanted(app, monkeypatch):
    from dynviz import ui

    events = []
    analyze = ui.analyze
    monkeypatch.setattr(ui, "background_work_wanted", lambda: True)
    monkeypatch.setattr(ui, "start_warm_up", lambda *args: None)
    monkeypatch.setattr(ui, "start_prefetch", lambda server, image: events.append(f"prefetch {image.name}"))
    monkeypatch.setattr(ui, "analyze", lambda name, image, *rest: events.append("page") or analyze(name, image, *rest))
    app.switch_page("pages/early_exit.py").run()
    events.clear()
    second = app.selectbox(key="example").options[1]
    app.selectbox(key="example").select_index(1).run()
    assert events[0] == "page" and events[-1].startswith("prefetch")  # after the page in front of the visitor
    assert second.startswith(events[-1].removeprefix("prefetch "))
    app.run()
    assert not app.exception and sum(e.startswith("prefetch") for e in events) == 1
