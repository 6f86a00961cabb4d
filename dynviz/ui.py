"""Streamlit pieces every page shares: the input picker, cached models and
results, knob sliders, the model card. Pages stay thin: they call these and the
renderers in :mod:`dynviz.viz`."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from dynviz.cards import ClassUsage, ModelCard, load_card, model_table
from dynviz.clips import EXAMPLE_CLIPS, ExampleClip
from dynviz.compare import Family, family_of
from dynviz.explain import Heatmap, grad_cam, pushed_towards
from dynviz.gallery import (
    GalleryItem,
    GalleryResult,
    default_gallery,
    exhaustive_settings,
    labelled_gallery,
    run_gallery,
)
from dynviz.inputs import MAX_BYTES, InputError, InputImage, load_image
from dynviz.models.base import MeasuresSpeed
from dynviz.models.every_frame import EveryFrame
from dynviz.progress import reporting
from dynviz.runtime import SERVER, inference, settings_key
from dynviz.targets import TargetReport, reports_for
from dynviz.trace import Trace
from dynviz.units import FLOPS_UNIT, format_flops, spent_of_full
from dynviz.video import (
    MAX_FRAMES,
    MAX_SECONDS,
    MAX_VIDEO_BYTES,
    InputVideo,
    has_video_suffix,
    is_video,
    load_video,
)
from dynviz.viz.compare import data_url, decision_picture
from dynviz.viz.gates import class_usage_heatmap
from dynviz.viz.image import preview, thumbnail
from dynviz.viz.video import annotated_clip
from dynviz.warmup import start_prefetch, start_warm_up
from dynviz.zoo import IMAGE, VIDEO, declared_records, list_models

INPUT_KEY = "dynviz_input"
VIDEO_KEY = "dynviz_video"
FRAME_KEY = "dynviz_video_frame"
PICKED_KEY = "dynviz_sidebar_pick"
PREFETCH_KEY = "dynviz_prefetch"
MAX_UPLOADS = 20
"""Files decoded from one upload: a class dropping a folder of photos must not hold the server."""


def text(value: str) -> str:
    """A user-supplied string (a file name) made safe to show inside Markdown."""
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$])", r"\\\1", value)


@st.cache_resource(max_entries=32, show_spinner=False)
def decode(data: bytes, name: str) -> InputImage:
    """One decoded image for every rerun and session that sends these bytes (a resource: ``cache_data``
    would pickle a 12-megapixel image at every rerun)."""
    return load_image(data, name)


def shown(image: InputImage) -> Image.Image:
    """What ``st.image`` sends of an input: at most 640 pixels on its longest side."""
    return preview(image.image)


@st.cache_data(show_spinner=False)
def examples() -> list[dict[str, str]]:
    return json.loads(resources.files("dynviz.examples").joinpath("examples.json").read_text())


def example_bytes(entry: dict[str, str]) -> bytes:
    return resources.files("dynviz.examples").joinpath(entry["file"]).read_bytes()


def example(entry: dict[str, str]) -> InputImage:
    return decode(example_bytes(entry), entry["title"])


@st.cache_resource(max_entries=4, show_spinner="Decoding the video (once for all users)…")
def decode_video(data: bytes, name: str) -> InputVideo:
    """One decoded clip for every rerun and session that sends these bytes; few are kept (a long clip holds
    up to a hundred megabytes of frames)."""
    return load_video(data, name)


def example_clip(clip: ExampleClip) -> InputVideo:
    return decode_video(example_clip_bytes(clip), clip.title)


def example_clip_bytes(clip: ExampleClip) -> bytes:
    return resources.files("dynviz.examples").joinpath(clip.file).read_bytes()


def example_clips() -> list[tuple[bytes, str]]:
    return [(example_clip_bytes(clip), clip.title) for clip in EXAMPLE_CLIPS]


def pick(chosen: InputImage | InputVideo | None) -> None:
    """Make a new pick the analysed input (a clip: its middle frame for the image pages); with no new pick the
    earlier input stays, as does an image sent from the gallery."""
    if chosen is None or chosen.digest == st.session_state.get(PICKED_KEY):
        return
    st.session_state[PICKED_KEY] = chosen.digest
    if isinstance(chosen, InputVideo):
        st.session_state[VIDEO_KEY] = chosen
        st.session_state[FRAME_KEY] = chosen.frame_count // 2
        st.session_state[INPUT_KEY] = chosen.frame(chosen.frame_count // 2)
    else:
        st.session_state[VIDEO_KEY] = None
        st.session_state[INPUT_KEY] = chosen
    st.session_state[PREFETCH_KEY] = st.session_state[INPUT_KEY]


@contextlib.contextmanager
def prefetch_after_the_page() -> Iterator[None]:
    """Run the page, then start the prefetch of a photo picked in this run (:func:`prefetched`): the page in
    front of the visitor is answered without background work beside it (a 12-megapixel upload's page took a
    third longer with it), and every other page's answer is computed while the visitor reads this one."""
    try:
        yield
    finally:
        if (image := st.session_state.pop(PREFETCH_KEY, None)) is not None:
            prefetched(image)


def background_work_wanted() -> bool:
    """``DYNVIZ_WARM_UP=0`` (the test suite's apps, which each need a model or two) turns off what the app
    computes unasked: the start-up warm-up and the prefetch of picked inputs."""
    return os.environ.get("DYNVIZ_WARM_UP", "1") != "0"


def prefetched(image: InputImage) -> None:
    """Start, once per server process and image, running a newly picked image through every model."""
    if background_work_wanted():
        _prefetch(image.digest, image)


@st.cache_resource(max_entries=64, show_spinner=False)
def _prefetch(digest: str, _image: InputImage) -> threading.Thread:
    return start_prefetch(SERVER, _image)


def frame_picker(video: InputVideo) -> None:
    """The frame of the clip that the image pages analyse."""

    def show_frame() -> None:
        st.session_state[INPUT_KEY] = video.frame(st.session_state[FRAME_KEY])

    st.slider("Frame for the image pages", 0, video.frame_count - 1, key=FRAME_KEY, on_change=show_frame)


def input_sidebar() -> None:
    """The input picker, once for all pages: an example photo, uploads or the camera."""
    with st.sidebar:
        st.header("Input")
        source = st.radio(
            "Source", ["Example photos", "Example clips", "Upload", "Camera"], key="source", horizontal=True
        )
        chosen: InputImage | InputVideo | None = None
        if source == "Example clips":
            clip = st.selectbox("Example clip", EXAMPLE_CLIPS, format_func=lambda c: c.title, key="example_clip")
            chosen = example_clip(clip)
            st.caption("Made from the example photos by python -m dynviz make-clips --examples.")
        elif source == "Example photos":
            entries = examples()
            entry = st.selectbox(
                "Example", entries, format_func=lambda e: f"{e['title']} ({e['scene'].split(':')[0]})", key="example"
            )
            chosen = example(entry)
            st.caption(f"{entry['scene']}. {entry['author']}, {entry['license']}.")
        elif source == "Upload":
            chosen = pick_upload()
        else:
            shot = st.camera_input("Take a photo", key="camera")
            chosen = decoded_or_error(shot.getvalue(), "camera photo") if shot is not None else None
        pick(chosen)
        video = current_video()
        if video is not None:
            st.caption(
                f"Clip: {text(video.name)}, {video.frame_count} frames, {video.times[-1]:.1f} s, "
                f"{video.size[0]}×{video.size[1]} (the Video page analyses it)"
            )
            for note in video.notes:
                st.caption(f"Note: {text(note)}")
            frame_picker(video)
        current = current_input()
        if current is not None:
            st.image(shown(current), caption=f"Analysing: {current.name}")
            if current.file_size:
                st.caption(
                    f"{current.file_size[0]}×{current.file_size[1]} pixels, read at {current.size[0]}×"
                    f"{current.size[1]}: the networks see a few hundred pixels across"
                )
            for note in current.notes:
                st.caption(f"Note: {text(note)}")


def pick_upload() -> InputImage | InputVideo | None:
    """Decode every uploaded file; a bad one gets one line and the others stay usable."""
    uploads = st.file_uploader(
        "Images (JPEG, PNG, WebP, GIF, BMP, TIFF) or videos (MP4, MOV, WebM, MKV, AVI, animated GIF)",
        accept_multiple_files=True,
        key="uploads",
        help=(
            f"Up to {MAX_UPLOADS} files; images of at most {MAX_BYTES // 2**20} MB, videos of at most "
            f"{MAX_VIDEO_BYTES // 2**20} MB (the first {MAX_SECONDS:.0f} s and {MAX_FRAMES} frames are analysed). "
            "They stay in this browser session."
        ),
    )
    uploads = uploads or []
    if len(uploads) > MAX_UPLOADS:
        st.warning(f"{len(uploads)} files: the first {MAX_UPLOADS} are analysed.")
        uploads = uploads[:MAX_UPLOADS]
    good = [image for upload in uploads if (image := decoded_or_error(upload.getvalue(), upload.name))]
    if not good:
        return None
    return st.selectbox("Analyse", good, format_func=lambda image: image.name, key="upload_choice")


def decoded_or_error(data: bytes, name: str) -> InputImage | InputVideo | None:
    try:
        if is_video(data) or has_video_suffix(name):
            return decode_video(data, name)
        return decode(data, name)
    except InputError as error:
        st.error(text(str(error)))
        return None


def current_input() -> InputImage | None:
    return st.session_state.get(INPUT_KEY)


def current_video() -> InputVideo | None:
    return st.session_state.get(VIDEO_KEY)


def required_video() -> InputVideo:
    """The analysed clip; the page stops with a hint while there is none."""
    return _required(
        current_video(),
        "Choose a video in the sidebar: an example clip, or upload one (MP4, MOV, WebM, MKV, AVI, GIF).",
    )


def _required(chosen, hint: str):
    if chosen is None:
        st.info(hint)
        st.stop()
    return chosen


def analyze_video(model_name: str, video: InputVideo, settings: dict[str, float] | None = None) -> Trace:
    """The trace of ``video`` under ``settings``, with a progress bar while the frames run (computed once for
    every session)."""
    return analyze_with_progress(model_name, model(model_name), video, settings)


def analyze_with_progress(name: str, chosen, video: InputVideo, settings: dict[str, float] | None) -> Trace:
    """``chosen`` (registered, or served, as ``name``) on ``video``, with a progress bar while it runs."""
    if SERVER.answered(name, chosen, video, settings):
        return SERVER.analyze(name, chosen, video, settings)
    bar = st.progress(0.0, text=f"Running {name} on {video.name}…")
    with reporting(lambda fraction, words: bar.progress(fraction, text=words)):
        trace = SERVER.analyze(name, chosen, video, settings)
    bar.empty()
    return trace


@st.cache_data(max_entries=8, show_spinner="Drawing the decisions on the clip…")
def _annotated(model_name: str, digest: str, settings: tuple, _video: InputVideo, _trace: Trace) -> bytes:
    return annotated_clip(_video, _trace)


def annotated(model_name: str, video: InputVideo, trace: Trace) -> bytes:
    """The clip with ``trace``'s decisions drawn on it (WebM), made once per model, clip and settings."""
    return _annotated(model_name, video.digest, settings_key(trace.settings), video, trace)


def every_frame(model_name: str, video: InputVideo) -> Trace:
    """``model_name`` (an image model) on every frame of ``video``: the all-frames baseline."""
    baseline = EveryFrame(model(model_name))
    return analyze_with_progress(baseline.name, baseline, video, None)


def required_input() -> InputImage:
    """The analysed input; the page stops with a hint while there is none."""
    return _required(current_input(), "Choose a photo in the sidebar: an example, an upload or the camera.")


def table_and_downloads(
    title: str, trace: Trace, digest: str, tabulate: Callable[[Trace], pd.DataFrame], rows: str
) -> None:
    """``tabulate(trace)`` in an expander, made once it is opened, with downloads of it (CSV) and of the whole
    trace (JSON)."""
    if box := folded(title, "table_and_downloads"):
        table = tabulate(trace)
        box.dataframe(table, hide_index=True)
        download_name = f"{trace.model}-{digest[:12]}"
        box.download_button("Trace (JSON)", trace.to_json(indent=1), f"{download_name}.json", "application/json")
        box.download_button(f"{rows} (CSV)", table.to_csv(index=False), f"{download_name}.csv", "text/csv")


def model_card(model_name: str) -> None:
    """The model's card in an expander, where it has one."""
    card = load_card(model_name)
    if card is not None:
        card_expander(card)


def card_expander(card: ModelCard) -> None:
    if box := folded("Model card", "model_card"):
        with box:
            show_card(card)


def folded(title: str, key: str) -> DeltaGenerator | None:
    """A closed expander whose content runs only once it is opened: the container while open, else None. (A
    plain closed expander's content is built, sent and laid out by the browser on every run of the page.)"""
    box = st.expander(title, key=key, on_change="rerun")
    return box if box.open else None


EXIT_MODEL_KEY = "exit_model"


def model_choice(models: list[str], opening: str, key: str) -> str:
    """The page's model picker, opening on ``opening`` where it is bundled (the model the page teaches with
    first; the zoo lists models by name, and a new one must not take its place)."""
    return st.selectbox("Model", models, index=models.index(opening) if opening in models else 0, key=key)


def send_to_analysis(image: InputImage, model_name: str) -> None:
    """Make ``image`` the analysed input and open it on the early-exit page with ``model_name``."""
    st.session_state[INPUT_KEY] = image
    st.session_state[EXIT_MODEL_KEY] = model_name
    st.switch_page("pages/early_exit.py")


@st.cache_resource(show_spinner="Loading the model (once for all users)…")
def model(name: str):
    return SERVER.model(name)


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread | None:
    """Once per server process: the background warm-up (:mod:`dynviz.warmup`), where
    :func:`background_work_wanted`."""
    if not background_work_wanted():
        return None
    return start_warm_up(SERVER, example_photos, example_clips)


def offered(*kinds: type) -> bool:
    """Whether a bundled model emits one of these record kinds (a family's page has something to show)."""
    return any(list_models(emitting=kind) for kind in kinds)


def analyze(model_name: str, image: InputImage, settings: dict[str, float] | None = None) -> Trace:
    """The trace of ``image`` under ``settings``: computed once for every session (:mod:`dynviz.runtime`)."""
    with st.spinner("Running the network…"):
        return SERVER.analyze(model_name, model(model_name), image, settings)


def every_model(image: InputImage | InputVideo) -> list[Trace]:
    """``image`` through every bundled model that accepts it (a clip: every video model), at its default
    settings, with progress while it runs (each answer is computed once for every session)."""
    names = list_models(accepting=VIDEO if isinstance(image, InputVideo) else IMAGE)
    bar = st.progress(0.0, text="Running every model…")
    traces = []
    for i, name in enumerate(names):
        bar.progress(i / len(names), text=f"Running {name} ({i + 1} of {len(names)})…")
        traces.append(SERVER.analyze(name, model(name), image, None))
    bar.empty()
    return traces


@st.cache_data(max_entries=64, show_spinner=False)
def _decision_pictures(digest: str, answers: tuple, _image: InputImage | InputVideo, _traces: list[Trace]) -> dict:
    # 72 px high: drawn from the preview, not the full photo (a clip's: its middle frame).
    small = shown(_image.frame(_image.frame_count // 2) if isinstance(_image, InputVideo) else _image)
    return {t.model: data_url(decision_picture(small, t)) for t in _traces}


def decision_pictures(image: InputImage | InputVideo, traces: list[Trace]) -> dict[str, str]:
    """Each trace's decision drawn small (:func:`dynviz.viz.compare.decision_picture`) as a data URL, by model:
    drawn once per input, model and settings, not at every rerun of the Compare page."""
    answers = tuple((t.model, settings_key(t.settings)) for t in traces)
    return _decision_pictures(image.digest, answers, image, traces)


def family(model_name: str) -> Family:
    """The family of ``model_name``'s decisions, and the page that shows them."""
    card = load_card(model_name)
    return family_of(declared_records(model_name), card.about.family if card else "")


def open_model_page(image: InputImage | InputVideo, model_name: str, family: Family) -> None:
    """Make ``image`` the analysed input (a clip is already the sidebar's) and open the page of ``family``
    with ``model_name`` chosen."""
    if isinstance(image, InputImage):
        st.session_state[INPUT_KEY] = image
    st.session_state[family.model_key] = model_name
    if family.view_key:
        st.session_state[family.view_key] = family.view
    st.switch_page(family.page)


@st.cache_data(max_entries=64, show_spinner="Computing Grad-CAM…")
def exit_heatmap(model_name: str, digest: str, exit_index: int, target: int, _image: InputImage) -> Heatmap:
    """Grad-CAM of one exit's class, cached per input (``digest`` stands for the unhashed image)."""
    return grad_cam(model(model_name).explain_exit(_image, exit_index, target))


@st.cache_data(max_entries=64, show_spinner="Computing the attribution…")
def gate_heatmap(model_name: str, digest: str, block: int, executed: tuple[bool, ...], _image: InputImage) -> Heatmap:
    """Integrated Gradients of one block's gate logit, along the path the input took (cached per input)."""
    return pushed_towards(model(model_name).explain_gate(_image, block, executed))


@st.cache_data(max_entries=64, show_spinner="Computing the attribution…")
def routing_heatmap(model_name: str, digest: str, decision: tuple[int, ...], _image: InputImage) -> Heatmap:
    """Integrated Gradients of one routing decision (the model's ``explain_routing(image, *decision)``), cached
    per input."""
    return pushed_towards(model(model_name).explain_routing(_image, *decision))


def second_input(key: str) -> InputImage | None:
    """A second image to compare with the sidebar's: an example photo or an upload."""
    source = st.radio("Second image", ["Example photos", "Upload"], key=f"{key}:source", horizontal=True)
    if source == "Upload":
        upload = st.file_uploader("Image", key=f"{key}:upload")
        return decoded_or_error(upload.getvalue(), upload.name) if upload is not None else None
    entries = examples()
    entry = st.selectbox("Example", entries, index=min(1, len(entries) - 1), format_func=lambda e: e["title"], key=key)
    return example(entry)


def example_photos() -> list[tuple[bytes, str]]:
    return [(example_bytes(entry), entry["title"]) for entry in examples()]


@st.cache_resource(max_entries=4, show_spinner="Reading the gallery's images…")
def gallery_items(model_name: str, folder: str | None) -> list[GalleryItem]:
    """The bundled set for this model, or the labelled images under ``folder`` (a path on this server)."""
    chosen = model(model_name)
    if folder:
        return labelled_gallery(Path(folder).expanduser(), chosen.class_keys())
    return default_gallery(chosen, example_photos)


def gallery(model_name: str, folder: str | None, settings: dict[str, float]) -> list[GalleryResult]:
    """Every gallery image decided under ``settings``; exits are computed once per image, for every session."""
    items = gallery_items(model_name, folder)
    chosen = model(model_name)
    done = SERVER.answered(model_name, chosen, items[-1].image, exhaustive_settings(chosen))
    message = "Running the model on the gallery (once; then only the decisions are re-made)…"
    with contextlib.nullcontext() if done else st.spinner(message):
        return run_gallery(chosen, items, settings, functools.partial(SERVER.analyze, model_name, chosen))


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail_png(digest: str, _image: Image.Image) -> bytes:
    """A gallery image's thumbnail as PNG, made once per image: given a PIL image, ``st.image`` would resize and
    encode it again at every rerun (a fifth of the Easy-vs-hard page's server time)."""
    buffer = io.BytesIO()
    thumbnail(_image).save(buffer, "PNG")
    return buffer.getvalue()


def operating_point_picker(model_name: str, key: str) -> str:
    """A choice among the model's measured operating points, its default first."""
    chosen = model(model_name)
    card = load_card(model_name)
    names = list(chosen.operating_points())
    default = card.default_point if card and card.default_point in names else names[0]
    names.sort(key=lambda n: n != default)
    return st.selectbox(
        "Operating point", names, key=key, format_func=lambda n: f"{n} (default)" if n == default else n
    )


def knob_sliders(model_name: str, leave_out: tuple[str, ...] = ()) -> dict[str, float]:
    """A slider per decision knob (a radio for a knob with named choices), starting at the model's default."""
    settings = {}
    for knob in model(model_name).knobs():
        if knob.name in leave_out:
            continue
        key = f"{model_name}:{knob.name}"
        if knob.choices:
            options = range(len(knob.choices))
            chosen = st.radio(
                knob.label, options, int(knob.default), format_func=knob.choices.__getitem__, help=knob.help, key=key
            )
            settings[knob.name] = float(chosen)
        else:
            settings[knob.name] = st.slider(
                knob.label, knob.low, knob.high, knob.default, knob.step, help=knob.help, key=key
            )
    return settings


@st.cache_data(max_entries=64, show_spinner="Timing the executed and the dense path…")
def realised_speed(model_name: str, digest: str, threshold: float, _image: InputImage):
    """Realised latency of a gated model's executed path against its dense twin, on this input."""
    with inference():
        return model(model_name).measure_speed(_image, threshold)


def threshold_captions(model_name: str, trace: Trace, units: str) -> None:
    """Under a gate threshold's slider: what raising it does to the gated ``units``, and how many of this input's
    gated decisions its range can switch. A trained gate makes most of them firmly, near 0 or 1, and θ then
    moves few (a DynConv mask unit: a few percent)."""
    st.caption(f"Raise θ and {units} whose gate is less sure they are needed are skipped: cheaper, but riskier.")
    knob = next(k for k in model(model_name).knobs() if k.name == "threshold")
    probabilities = trace.gate_probabilities()
    within = sum(knob.low <= p < knob.high for p in probabilities)
    reach = f"a probability from {knob.low:g} to {knob.high:g}"
    if within == len(probabilities):
        st.caption(f"On this input all {within:,} gated decisions have {reach}: θ can change any of them.")
    else:
        st.caption(
            f"On this input {within:,} of the {len(probabilities):,} gated decisions "
            f"({within / len(probabilities):.0%}) have {reach}: only they can change as θ moves, the gates made "
            "the rest firmly."
        )


def speed_metrics(model_name: str, image: InputImage, settings: dict[str, float], trace: Trace) -> None:
    """The theoretical speed-up (FLOPs) beside the realised one (latency on this server, where the model can
    time its executed path against its dense twin), and why they differ."""
    theoretical, realised = st.columns(2)
    predicted = trace.cost.flops_full / trace.cost.flops
    theoretical.metric(
        "Theoretical speed-up (FLOPs)", f"{predicted:.2f}×", help=spent_of_full(trace.cost.flops, trace.cost.flops_full)
    )
    why = (
        "What is skipped saves multiply–adds, but deciding, and gathering what runs, cost time the FLOPs count "
        "does not see, most on small feature maps: the realised speed-up falls short of the theoretical one"
    )
    if isinstance(model(model_name), MeasuresSpeed):
        speed = realised_speed(model_name, image.digest, settings["threshold"], image)
        realised.metric(
            "Realised speed-up (latency, this server)",
            f"{speed.speedup:.2f}×",
            help=f"executed path {speed.executed_ms:.1f} ms against the dense network's {speed.dense_ms:.1f} ms, "
            f"best of 5, both on the inference path in use ({speed.path})",
        )
        if speed.speedup >= predicted:
            why += (
                ", except where, as on this input, what was skipped took a larger share of the dense network's "
                "time than of its FLOPs"
            )
    st.caption(why + ".")


def answer_header(trace: Trace, decision: str, detail: str, decision_label: str = "Stopped at stage") -> None:
    """The answer first: label, confidence, where it was decided and the cost."""
    label, where, cost, latency = st.columns([2, 1.2, 1.2, 1])  # class names are the long values
    label.metric(
        "Answer",
        trace.prediction.label,
        f"{trace.prediction.confidence:.0%} sure",
        delta_color="off",
        delta_arrow="off",
    )
    where.metric(decision_label, decision, detail, delta_color="off", delta_arrow="off")
    cost.metric(
        FLOPS_UNIT,
        format_flops(trace.cost.flops),
        f"{trace.cost.fraction:.0%} of {format_flops(trace.cost.flops_full)} static",
        delta_color="off",
        delta_arrow="off",
    )
    ms = trace.cost.latency_ms
    latency.metric(
        "Latency",
        f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s",
        help="Measured wall time of the parts that ran, on this server.",
    )


def card_table() -> pd.DataFrame:
    """The bundled models, one row each, from their cards."""
    return pd.DataFrame(model_table())


def card_usage(model_name: str) -> tuple[ClassUsage | None, str]:
    """The gated units' usage on the model's card (None where it has none), and what it was measured on: "the
    10000 cifar10 test images at “θ = 0.5”"."""
    return _usage_on(load_card(model_name))


def _usage_on(card: ModelCard | None) -> tuple[ClassUsage | None, str]:
    evaluation = card.evaluation if card is not None else None
    if evaluation is None or evaluation.class_usage is None:
        return None, ""
    usage = evaluation.class_usage
    return usage, f"the {evaluation.images} {evaluation.data} {evaluation.split} {evaluation.unit} at “{usage.point}”"


def card_with_class_usage(model_name: str, unit: str, measure: str | None = None) -> None:
    """The per-class usage heatmap from the model's card (if its evaluation has one), then the card; ``measure``:
    what the usage is, where it is not the share of the unit that ran (:func:`class_usage_heatmap`)."""
    card = load_card(model_name)
    if card is None:
        return
    usage, measured_on = _usage_on(card)
    if usage is not None:
        st.plotly_chart(class_usage_heatmap(usage, unit, measure), key="class_usage")
        what = f"the share of each {unit} that each class ran" if measure is None else f"each class's mean {measure}"
        st.caption(f"From the model card: on {measured_on}, {what} (in brackets: its images).")
    card_expander(card)


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def show_card(card: ModelCard) -> None:
    about = card.about
    st.markdown(f"**{about.title}** — {about.family}")
    st.write(about.summary)
    st.markdown("**Papers**\n" + "\n".join(f"- {p}" for p in about.papers))
    st.markdown(f"**Data**: {about.data}  \n**License**: {about.license}")
    if about.caveats:
        st.markdown(f"**Caveats**: {about.caveats}")
    if card.recipe:
        st.markdown(f"**Recipe** ({card.recipe.seconds:.0f} s on {card.recipe.machine}):")
        st.code(card.recipe.command, language="bash")
    if card.evaluation:
        evaluation = card.evaluation
        st.markdown(
            f"**Measured** on {evaluation.data}, split `{evaluation.split}`, {evaluation.images} {evaluation.unit}, by:"
        )
        st.code(evaluation.command, language="bash")
        rows = [
            {
                "operating point": p.name,
                "default": p.name == card.default_point,
                "top-1": f"{100 * p.top1:.1f}%",
                "top-5": f"{100 * p.top5:.1f}%",
                f"mean {FLOPS_UNIT}": format_flops(p.mean_flops),
                "of static": f"{p.mean_flops / card.flops_full:.0%}",
                "mean latency": f"{p.mean_latency_ms:.0f} ms",
                "answered at each exit": ", ".join(f"{r:.0%}" for r in p.exit_rates),
                "frames looked at": _share(p.frames_processed),
                "per-frame top-1": _share(p.frame_top1),
                "cuts found": _share(p.cuts_found),
            }
            for p in (*evaluation.points, *evaluation.baselines)
        ]
        # Columns no point has (the clips' columns on an image model's card) are left out.
        rows = [{k: v for k, v in row.items() if any(other[k] for other in rows)} for row in rows]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        if evaluation.match is not None:
            st.markdown(evaluation.match.describe())
    if reports := reports_for(card.name):
        colours = {True: "green", False: "red", None: "gray"}

        def verdict(r: TargetReport) -> str:
            return f":{colours[r.met]}[{r.verdict}] — {r.how_far}"

        lines = []
        for checked in reports:
            r = checked.main
            lines.append(f"- {r.claim} (issue {r.issue}): {verdict(r)}")
            lines += [f"  - on {where}: {verdict(c)}" for where, c in checked.checks]
        st.markdown("**Targets** (the project's, from its issues; read from the cards):\n" + "\n".join(lines))
