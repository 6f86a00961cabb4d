import dataclasses
import json
import random
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
from conftest import encode, pattern

from dynviz.__main__ import main
from dynviz.clips import shot, write_clip


def write_inputs(folder):
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(pattern(seed=1), "PNG"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "b.jpg").write_bytes(encode(pattern(seed=2), "JPEG"))
    return folder


def test_analyze_reports_a_broken_file_and_still_analyses_the_others(tmp_path, capsys):
    folder = write_inputs(tmp_path / "in")
    out = tmp_path / "rows.csv"
    assert main(["analyze", str(folder), "--model", "lite_cascade", "--out", str(out)]) == 1
    rows = pd.read_csv(out)
    assert [p.rsplit("/", 1)[-1] for p in rows["input"]] == ["a.png", "b.jpg"]
    for column in (
        "input",
        "model",
        "label",
        "label_index",
        "confidence",
        "flops",
        "flops_full",
        "latency_ms",
        "exit",
        "exit_name",
    ):
        assert column in rows.columns
    assert rows.sort_values("exit")["flops"].is_monotonic_increasing and (rows["flops_full"] > 0).all()
    errors = capsys.readouterr().err
    assert "broken.jpg: " in errors and "1 of 3 inputs failed" in errors


def test_analyze_follows_the_knobs(tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(encode(pattern(seed=3), "PNG"))
    out = tmp_path / "traces.json"
    assert (
        main(
            [
                "analyze",
                str(image),
                "--model",
                "lite_cascade",
                "--set",
                "tau_1=1.01",
                "--set",
                "tau_2=1.01",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    trace = json.loads(out.read_text())[0]
    assert [r["computed"] for r in trace["records"]] == [True, True, True]
    assert main(["analyze", str(image), "--model", "lite_cascade", "--set", "tau_1=0"]) == 0
    assert ",0,Lite0 @ 224 px" in capsys.readouterr().out
    assert main(["analyze", str(image), "--model", "lite_cascade", "--set", "threshold=0.5"]) == 2
    assert "lite_cascade has no such knob; its knobs: tau_1, tau_2" in capsys.readouterr().err


def test_models_lists_every_card(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert {"lite0", "lite1", "lite2", "lite_cascade"} <= set(rows)
    assert rows["lite_cascade"]["mean_flops"] < rows["lite_cascade"]["flops_full"]


def test_eval_on_a_labelled_folder(tmp_path, capsys):
    espresso = resources.files("dynviz.examples").joinpath("espresso.jpg").read_bytes()
    (tmp_path / "n07920052").mkdir()
    (tmp_path / "n07920052" / "cup.jpg").write_bytes(espresso)
    (tmp_path / "n07920052_second.JPEG").write_bytes(espresso)
    out = tmp_path / "eval.json"
    assert main(["eval", "lite_cascade", "--data", str(tmp_path), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 2
    default = next(p for p in result["points"] if p["name"] == "harm ≤ 0.4%")
    assert default["top1"] == 1.0 and default["exit_rates"][0] == 1.0
    assert {b["name"] for b in result["baselines"]} == {"lite0", "lite1", "lite2"}


@pytest.fixture
def cascade_card_and_a_photo(tmp_path, monkeypatch) -> Path:
    """lite_cascade's weights and card in a folder of their own, and a folder with one labelled photo."""
    import shutil

    from dynviz import cards

    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    for suffix in ("json", "safetensors"):
        shutil.copy(cards.PRETRAINED / f"lite_cascade.{suffix}", pretrained)
    monkeypatch.setattr(cards, "PRETRAINED", pretrained)
    monkeypatch.setattr("dynviz.zoo.PRETRAINED", pretrained)
    photos = tmp_path / "other-photos"
    photos.mkdir()
    espresso = resources.files("dynviz.examples").joinpath("espresso.jpg").read_bytes()
    (photos / "n07920052_cup.JPEG").write_bytes(espresso)
    return photos


def test_eval_check_adds_a_second_column_to_the_card_and_keeps_its_evaluation(cascade_card_and_a_photo):
    from dynviz import cards

    before = cards.load_card("lite_cascade")
    photos = cascade_card_and_a_photo
    for _ in range(2):  # a second check on the same photos replaces the first
        assert main(["eval", "lite_cascade", "--data", str(photos), "--check"]) == 0
    after = cards.load_card("lite_cascade")
    assert after.evaluation == before.evaluation
    assert after.checks[:-1] == before.checks  # the card's earlier checks stay
    assert (after.checks[-1].data, after.checks[-1].split, after.checks[-1].images) == ("other-photos", "all", 1)
    row = next(r for r in cards.model_table() if r["model"] == "lite_cascade")
    assert row["top-1 on other photos"].endswith("100.0% on other-photos (all, 1 images)")


def test_eval_card_refreshes_the_method_s_description_and_keeps_what_training_wrote(cascade_card_and_a_photo):
    """The license and data lines describe the weights (the training run wrote them); the rest, the method."""
    from dynviz import cards

    card = cards.load_card("lite_cascade")
    trained = dataclasses.replace(card.about, summary="an old summary", data="photos a training run read")
    dataclasses.replace(card, about=trained).save()
    assert main(["eval", "lite_cascade", "--data", str(cascade_card_and_a_photo), "--card"]) == 0
    about = cards.load_card("lite_cascade").about
    assert about.data == "photos a training run read" and about.summary == card.about.summary


def test_analyze_and_eval_work_for_msdnet_and_its_baselines_on_cifar_batches(tmp_path, capsys):
    from test_train import write_batches

    image = tmp_path / "small.png"
    image.write_bytes(encode(pattern(48, 40, seed=4), "PNG"))
    out = tmp_path / "rows.csv"
    assert main(["analyze", str(image), "--model", "msdnet_cifar", "--set", "tau_1=0", "--out", str(out)]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["exit"] == 0 and row["nodes_computed"] < row["nodes"]
    data = write_batches(tmp_path / "cifar")
    result = tmp_path / "eval.json"
    assert main(["eval", "msdnet_cifar", "--data", str(data), "--split", "test", "--out", str(result)]) == 0
    evaluation = json.loads(result.read_text())
    assert evaluation["images"] == 4
    assert [b["name"] for b in evaluation["baselines"]] == ["resnet20_cifar", "resnet32_cifar", "resnet56_cifar"]
    anytime = [p for p in evaluation["points"] if p["name"].startswith("anytime")]
    assert [p["mean_flops"] for p in anytime] == sorted(p["mean_flops"] for p in anytime)


def test_analyze_adds_the_decision_summary_of_gated_models(tmp_path, capsys):
    image = tmp_path / "photo.png"
    image.write_bytes(encode(pattern(64, 48, seed=4), "PNG"))
    for model, columns, decided in (
        ("skip_resnet_cifar", {"blocks_executed", "blocks", "block_mask"}, "blocks_executed"),
        ("channel_gate_resnet_cifar", {"active_channels", "channels", "active_channel_fraction"}, "active_channels"),
    ):
        rows = {}
        for threshold in ("0.05", "0.95"):
            out = tmp_path / f"{model}-{threshold}.csv"
            assert (
                main(["analyze", str(image), "--model", model, "--set", f"threshold={threshold}", "--out", str(out)])
                == 0
            )
            rows[threshold] = pd.read_csv(out, dtype={"block_mask": str}).iloc[0]
            assert columns <= set(rows[threshold].index)
        assert rows["0.95"]["flops"] < rows["0.05"]["flops"]
        assert rows["0.95"][decided] < rows["0.05"][decided]  # a stricter threshold runs less of the network


def test_analyze_adds_the_spatial_decision_summary(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(encode(pattern(96, 64, seed=6), "PNG"))

    def row(model: str, *settings: str) -> pd.Series:
        out = tmp_path / f"{model}-{len(settings)}.csv"
        options = [option for setting in settings for option in ("--set", setting)]
        assert main(["analyze", str(image), "--model", model, *options, "--out", str(out)]) == 0
        return pd.read_csv(out).iloc[0]

    masks = row("dynconv_resnet_cifar", "threshold=0.3")
    assert 0 < masks["mask_density"] <= 1 and len(masks["layer_densities"].split()) == 15
    focus = row("gfnet_lite0", "tau_1=1.0", "tau_2=1.0", "policy=0")
    assert focus["focus_steps"] == 2 and focus["crop_boxes"].count("|") == 1 and focus["exit"] == 2
    assert row("ranet_cifar")["exit_resolution"] in (8, 16, 32)


def test_analyze_writes_a_row_per_clip_or_per_frame_and_names_a_bad_clip(tmp_path, capsys):
    clip, bad = tmp_path / "pan.mp4", tmp_path / "bad.mp4"
    write_clip(shot(pattern(160, 120, seed=4), 12, (96, 72), random.Random(0)), clip)
    bad.write_bytes(b"not a video at all")
    out = tmp_path / "clips.csv"
    assert main(["analyze", str(clip), str(bad), "--model", "skip_frames_lite", "--out", str(out)]) == 1
    assert "bad.mp4: not a video this app reads" in capsys.readouterr().err
    row = pd.read_csv(out).iloc[0]
    assert row["frames"] == 12 and 1 <= row["frames_processed"] <= 12
    assert row["frames_processed"] + row["frames_glanced"] == 12 and row["flops"] < row["flops_full"]

    frames = tmp_path / "frames.csv"
    assert main(["analyze", str(clip), "--model", "lite0", "--per-frame", "--out", str(frames)]) == 0
    rows = pd.read_csv(frames)  # an image model on a clip: every frame, each with its own answer
    assert list(rows.columns) == [
        "input",
        "frame",
        "time_s",
        "label",
        "label_index",
        "confidence",
        "processed",
        "flops",
    ]
    assert list(rows["frame"]) == list(range(12)) and rows["processed"].all() and rows["label"].notna().all()


def test_eval_reads_a_folder_of_labelled_clips(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, synset in enumerate(("n01440764", "n01443537")):
        (photos / f"{synset}_photo.JPEG").write_bytes(encode(pattern(160, 120, seed=i), "JPEG"))
    assert main(["make-clips", "--images", str(photos), "--out", str(tmp_path / "clips"), "--slideshows", "1"]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "skip_frames_lite", "--data", str(tmp_path / "clips"), "--out", str(out)]) == 0
    evaluation = json.loads(out.read_text())
    assert evaluation["images"] == 2 + 1  # a shot per photo, and the slideshow
    baseline = evaluation["baselines"][0]
    assert baseline["name"] == "lite0" and baseline["frames_processed"] == 1.0
    assert all(p["frames_processed"] < 1.0 and p["frame_top1"] is not None for p in evaluation["points"])


def test_a_model_the_zoo_does_not_know_or_has_no_weights_for_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    image = tmp_path / "a.png"
    image.write_bytes(encode(pattern(seed=1), "PNG"))
    assert main(["analyze", str(image), "--model", "no_such_model"]) == 2
    assert capsys.readouterr().err.startswith("unknown model 'no_such_model'; known: ")
    from dynviz import cards

    monkeypatch.setattr(cards, "PRETRAINED", tmp_path)  # a checkout whose weights are not trained yet
    monkeypatch.setattr("dynviz.zoo.PRETRAINED", tmp_path)
    assert main(["analyze", str(image), "--model", "resnet20_cifar"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "resnet20_cifar: no weights yet; train them with python -m dynviz train resnet20_cifar"
