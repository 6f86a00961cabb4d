"""Clips: safe decoding, the temporal models' decisions and their cost, on tiny generated clips."""

import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, pattern
from PIL import Image

from dynviz.clips import make_clips, read_labels, shot, slideshow, write_clip
from dynviz.cost import flop_counter
from dynviz.data import labelled_images
from dynviz.inputs import InputError
from dynviz.models.efficientnet_lite import center_crop_box
from dynviz.models.every_frame import EveryFrame, analyst
from dynviz.models.frames import coarse_to_fine
from dynviz.runtime import inference
from dynviz.trace import GLANCED, PROCESSED, SKIPPED, FrameRecord, Trace
from dynviz.video import MAX_SECONDS, MAX_SIDE, load_video
from dynviz.zoo import create_model, tiny_config


def clip_bytes(tmp_path: Path, frames: list[np.ndarray], name: str = "clip.mp4", fps: float = 12) -> bytes:
    path = tmp_path / name
    write_clip(frames, path, fps)
    return path.read_bytes()


def still(seed: int, size=(96, 72)) -> np.ndarray:
    return np.asarray(pattern(*size, seed=seed))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def steady(folder):
    """A slow pan over one picture: 24 frames."""
    frames = shot(pattern(160, 120, seed=1), 24, (96, 72), random.Random(0))
    return load_video(clip_bytes(folder, frames, "steady.mp4"), "steady.mp4")


@pytest.fixture(scope="module")
def two_scenes(folder):
    """Two different pictures, 12 frames each: a cut at frame 12."""
    frames, cuts = slideshow(
        [pattern(160, 120, seed=1), Image.new("RGB", (160, 120), (20, 200, 40))], (96, 72), random.Random(1), 12
    )
    assert len(cuts) == 1
    return load_video(clip_bytes(folder, frames, "two_scenes.mp4"), "two_scenes.mp4"), cuts[0]


@pytest.fixture(scope="module")
def frame_exit():
    return create_model("frame_exit_lite", pretrained=False, **tiny_config("frame_exit_lite"))


@pytest.fixture(scope="module")
def skip_frames():
    return create_model("skip_frames_lite", pretrained=False, **tiny_config("skip_frames_lite"))


def analyze(model, video, **settings) -> Trace:
    with inference():
        return model.analyze(video, settings)


def test_a_clip_decodes_into_its_frames_with_times_and_thumbnails(steady):
    assert steady.frame_count == 24 and steady.size == (96, 72)
    assert steady.info.fps == 12 and steady.info.codec
    assert list(steady.times) == sorted(steady.times) and steady.times[1] == pytest.approx(1 / 12, abs=1e-3)
    assert steady.thumbnails.shape[0] == 24 and max(steady.thumbnails.shape[1:3]) == 96
    frame = steady.frame(5)
    assert frame.size == (96, 72) and frame.digest == f"{steady.digest}#5"


def test_frames_are_visited_coarse_to_fine():
    assert coarse_to_fine(8) == [4, 2, 6, 1, 3, 5, 7, 0]
    assert sorted(coarse_to_fine(13)) == list(range(13)) and coarse_to_fine(1) == [0]


def truncated(tmp_path):
    data = clip_bytes(tmp_path, [still(i) for i in range(8)])
    return data[: len(data) // 2]  # OpenCV's MP4 writer puts the index at the end: it is cut off


def riff_wave(tmp_path):
    """An audio-only file (WAV) named like a video."""
    samples = np.zeros(800, np.int16).tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(samples),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        8000,
        16000,
        2,
        16,
        b"data",
        len(samples),
    )
    return header + samples


def zero_frames(tmp_path):
    import cv2

    path = tmp_path / "zero.mp4"
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48)).release()
    return path.read_bytes()


@pytest.mark.parametrize(
    "make, name, message",
    [
        (lambda tmp: b"", "empty.mp4", "the file is empty"),
        (truncated, "truncated.mp4", "no video frames could be read"),
        (lambda tmp: b"this is not a video\n" * 10, "notes.mp4", "not a video this app reads"),
        (riff_wave, "voice.mp4", "not a video this app reads"),
        (zero_frames, "zero.mp4", "no video frames could be read"),
    ],
)
def test_a_bad_video_gets_one_line_naming_the_file(tmp_path, make, name, message):
    from dynviz.video import load_input

    with pytest.raises(InputError) as error:
        load_input(make(tmp_path), name)
    line = str(error.value)
    assert line.startswith(f"{name}: ") and message in line and "\n" not in line


def test_a_long_clip_is_cut_at_the_cap_with_a_note(tmp_path):
    seconds = int(MAX_SECONDS) + 10
    video = load_video(clip_bytes(tmp_path, [still(i % 3, (32, 24)) for i in range(seconds)], fps=1), "long.mp4")
    assert video.frame_count == int(MAX_SECONDS) and video.times[-1] < MAX_SECONDS
    assert any("only the first" in note for note in video.notes)


def test_a_large_clip_is_downscaled_with_a_note(tmp_path):
    frames = [np.asarray(pattern(1280, 720, seed=i)) for i in range(2)]
    video = load_video(clip_bytes(tmp_path, frames), "large.mp4")
    assert max(video.size) == MAX_SIDE and video.size == (720, 405)
    assert any("downscaled from 1280×720" in note for note in video.notes)


def test_a_rotated_phone_clip_is_turned_as_its_metadata_asks(tmp_path):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:10, :20] = 255  # a white corner, top left
    data = bytearray(clip_bytes(tmp_path, [frame] * 4))
    tkhd = data.find(b"tkhd")
    matrix = tkhd + 4 + 4 + 20 + 8 + 8  # version 0: times, track id, duration; reserved, layer, group, volume
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)  # 90°
    video = load_video(bytes(data), "phone.mp4")
    assert video.size == (48, 64) and video.info.rotation == 90
    assert any("turned by 90°" in note for note in video.notes)
    turned = np.asarray(video.frame(0).image)
    assert turned[:10, -10:].mean() > 200 and turned[-10:, :10].mean() < 50  # the corner went top right


def test_a_variable_frame_rate_takes_the_files_timestamps(tmp_path):
    frames = [Image.new("RGB", (32, 24), (30 * i, 0, 0)) for i in range(6)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[40, 200] * 3, loop=0)
    video = load_video(data, "vfr.gif")
    assert video.times == pytest.approx((0.0, 0.04, 0.24, 0.28, 0.48, 0.52), abs=0.011)
    assert any("variable frame rate" in note for note in video.notes)


def backbone_macs(model, video, **settings) -> tuple[Trace, int]:
    with inference(), flop_counter() as counter:
        trace = model.analyze(video, settings)
    return trace, counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ["frame_exit_lite", "skip_frames_lite"])
def test_frames_not_selected_never_reach_the_backbone(request, steady, name):
    model = request.getfixturevalue(name.removesuffix("_lite"))
    trace, counted = backbone_macs(model, steady)
    processed = [r for r in trace.records_of(FrameRecord) if r.action == PROCESSED]
    assert 0 < len(processed) < steady.frame_count
    assert counted == len(processed) * model.frame_flops  # the change test is not a network: nothing else counts
    assert sum(r.flops for r in processed) >= counted
    assert trace.cost.flops_full == steady.frame_count * model.frame_flops


def test_the_stop_threshold_and_the_budget_decide_how_many_frames_frame_exit_reads(frame_exit, steady):
    def looked(**settings) -> list[int]:
        records = analyze(frame_exit, steady, **settings).records_of(FrameRecord)
        return [r.index for r in sorted((r for r in records if r.action == PROCESSED), key=lambda r: r.order)]

    assert looked(tau=0.0, budget=16) == [12]  # the middle frame is always first, and then it is sure enough
    assert looked(tau=1.0, budget=5) == coarse_to_fine(24)[:5]  # never sure: the budget stops it
    trace = analyze(frame_exit, steady, tau=1.0, budget=5)
    assert {r.action for r in trace.records_of(FrameRecord)} == {PROCESSED, SKIPPED}
    assert trace.cost.flops == 5 * frame_exit.frame_flops


def test_the_change_threshold_decides_which_frames_skip_frames_recomputes_and_cuts_are_found(skip_frames, two_scenes):
    video, cut = two_scenes
    every = analyze(skip_frames, video, delta=0.0).records_of(FrameRecord)
    assert all(r.action == PROCESSED for r in every)
    lazy = analyze(skip_frames, video, delta=0.3).records_of(FrameRecord)
    computed = [r.index for r in lazy if r.action == PROCESSED]
    assert computed == [0, cut]  # the first frame, and the first after the cut, whatever δ
    assert [r.index for r in lazy if r.cut] == [cut]
    assert all(
        r.action == GLANCED and r.prediction == lazy[r.index - 1].prediction for r in lazy if r.index not in computed
    )


def test_boxes_are_in_frame_coordinates(frame_exit, steady):
    trace = analyze(frame_exit, steady, tau=1.0, budget=3)
    boxes = [r.box for r in trace.records_of(FrameRecord) if r.action == PROCESSED]
    assert boxes and all(box == center_crop_box(*steady.size) for box in boxes)
    assert trace.input_size == steady.size


def test_an_image_model_given_a_clip_runs_on_every_frame_and_averages(steady, photo):
    image_model = create_model("resnet20_cifar", pretrained=False, depth=8)
    runner = analyst("resnet20_cifar", image_model, steady)
    assert isinstance(runner, EveryFrame)
    trace = analyze(runner, steady)
    frames = trace.records_of(FrameRecord)
    assert len(frames) == steady.frame_count and all(r.action == PROCESSED and r.prediction for r in frames)
    assert trace.cost.flops == trace.cost.flops_full == sum(r.flops for r in frames)
    assert analyst("resnet20_cifar", image_model, photo) is image_model


def test_an_image_given_to_a_video_model_is_refused_by_name(frame_exit, photo):
    with pytest.raises(InputError, match=r"^pattern\.jpg: an image"):
        analyst("frame_exit_lite", frame_exit, photo)


def test_clips_made_from_photos_carry_their_labels_and_cuts(tmp_path):
    photos = []
    for i in range(3):
        path = tmp_path / "photos" / f"n0{i}_photo.jpg"
        path.parent.mkdir(exist_ok=True)
        pattern(120, 90, seed=i).save(path)
        photos.append((path, i))
    made = make_clips(photos, tmp_path / "clips", slideshows=2, seed=0, size=(64, 48))
    assert read_labels(tmp_path / "clips") == made
    assert json.loads((tmp_path / "clips" / "labels.json").read_text())[0]["label"] == 0
    keys = tuple((f"n0{i}",) for i in range(3))
    for item, labels in zip(labelled_images(tmp_path / "clips", keys), made):
        video = item.load()
        assert video.frame_count == len(labels.frame_labels) and item.frame_labels == labels.frame_labels
        assert all(labels.frame_labels[c] != labels.frame_labels[c - 1] for c in labels.cuts)


@pytest.fixture(scope="module")
def adaframe():
    return create_model("adaframe_lite", pretrained=False, **tiny_config("adaframe_lite"))


def test_adaframe_glances_at_every_frame_and_focuses_only_on_the_chosen_ones(adaframe, steady, monkeypatch):
    monkeypatch.setenv("DYNVIZ_COMPILE", "0")  # the eager modules, whose calls a hook can see
    seen = []  # (side, batch) of every backbone call
    hook = adaframe.net.stem.register_forward_hook(lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape[::3])))
    try:
        trace, counted = backbone_macs(adaframe, steady, glance=0, tau=1.0, budget=3, patch=1)
    finally:
        hook.remove()
    frames = trace.records_of(FrameRecord)
    focused = [r for r in frames if r.action == PROCESSED]
    assert len(focused) == 3 and all(r.action == GLANCED for r in frames if r not in focused)
    glance_side = adaframe.glance_sides[0]
    assert sum(batch for batch, side in seen if side == glance_side) == steady.frame_count  # glances, batched
    assert [batch for batch, side in seen if side == adaframe.resolution] == [1, 1, 1]  # a full look at 3 frames
    focus = adaframe.frame_flops + adaframe.policy_flops[0]
    assert counted == steady.frame_count * adaframe.glance_flops[0] + 3 * focus == trace.cost.flops
    view = center_crop_box(*steady.size)
    for r in focused:  # each patch lies in the frame's view, in frame pixels, 80% of its side
        assert view[0] <= r.box[0] < r.box[2] <= view[2] + 1e-6 and view[1] <= r.box[1] < r.box[3] <= view[3] + 1e-6
        assert r.box[2] - r.box[0] == pytest.approx(0.8 * (view[2] - view[0]))
    radius = steady.frame_count // 6  # each look within T / 2·budget of its coarse-to-fine place
    for r, place in zip(sorted(focused, key=lambda r: r.order), coarse_to_fine(steady.frame_count)):
        assert abs(r.index - place) <= radius
    whole = analyze(adaframe, steady, glance=0, tau=1.0, budget=3, patch=0)
    assert {r.box for r in whole.records_of(FrameRecord)} == {view}


def test_adaframes_knobs_move_its_cost(adaframe, steady):
    cheap = analyze(adaframe, steady, glance=0, tau=0.0)  # sure after any first look: one look
    more = analyze(adaframe, steady, glance=1, tau=1.0, budget=4)  # never sure: the whole budget
    assert sum(r.action == PROCESSED for r in cheap.records_of(FrameRecord)) == 1
    assert sum(r.action == PROCESSED for r in more.records_of(FrameRecord)) == 4
    assert cheap.cost.flops < more.cost.flops < more.cost.flops_full


def test_adaframe_looks_coarse_to_fine_at_the_surest_glance_near_each_place():
    from dynviz.models.adaframe import glance_refined_order

    scores = [0.0] * 16
    scores[11], scores[1], scores[5] = 0.9, 0.8, 0.7
    # Budget 2, 4 frames either way: the middle (8) moves to 11, the quarter (4) to 1.
    assert glance_refined_order(scores, 2) == [11, 1]
    # Budget 3, 2 frames either way: the middle has no surer glance near it and stays; 4 moves to 5, 12 to 11.
    assert glance_refined_order(scores, 3) == [8, 5, 11]
    assert glance_refined_order(scores, 16) == coarse_to_fine(16)  # no room to move: FrameExit's order
