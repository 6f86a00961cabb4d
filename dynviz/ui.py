"""Streamlit pieces every page shares: the input picker, cached models and
results, knob sliders, the model card. Pages stay thin: they call these and the
renderers in :mod:`dynviz.viz`."""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from importlib import resources

import pandas as pd
import streamlit as st

from dynviz.cost import FLOPS_UNIT, format_flops
from dynviz.explain import Heatmap, grad_cam
from dynviz.inputs import InputError, InputImage, load_image
from dynviz.models.base import Memo
from dynviz.trace import Trace
from dynviz.zoo import ModelCard, create_model, model_table

INPUT_KEY = "dynviz_input"
MEMO_ENTRIES = 64


def text(value: str) -> str:
    """A user-supplied string (a file name) made safe to show inside Markdown."""
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$])", r"\\\1", value)


@st.cache_data(max_entries=32, show_spinner=False)
def decode(data: bytes, name: str) -> InputImage:
    return load_image(data, name)


@st.cache_data(show_spinner=False)
def examples() -> list[dict[str, str]]:
    return json.loads(resources.files("dynviz.examples").joinpath("examples.json").read_text())


def example(entry: dict[str, str]) -> InputImage:
    return decode(resources.files("dynviz.examples").joinpath(entry["file"]).read_bytes(), entry["title"])


def input_sidebar() -> None:
    """The input picker, once for all pages: an example photo, uploads or the camera."""
    with st.sidebar:
        st.header("Input")
        source = st.radio("Source", ["Example photos", "Upload", "Camera"], key="source", horizontal=True)
        chosen: InputImage | None = None
        if source == "Example photos":
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
        if chosen is not None:
            st.session_state[INPUT_KEY] = chosen
        current = current_input()  # with no new choice, the earlier input stays analysed
        if current is not None:
            st.image(current.image, caption=f"Analysing: {current.name}")
            for note in current.notes:
                st.caption(f"Note: {text(note)}")


def pick_upload() -> InputImage | None:
    """Decode every uploaded file; a bad one gets one line and the others stay usable."""
    uploads = st.file_uploader("Images (JPEG, PNG, WebP, GIF, BMP, TIFF)", accept_multiple_files=True, key="uploads")
    good = [image for upload in uploads or [] if (image := decoded_or_error(upload.getvalue(), upload.name))]
    if not good:
        return None
    return st.selectbox("Analyse", good, format_func=lambda image: image.name, key="upload_choice")


def decoded_or_error(data: bytes, name: str) -> InputImage | None:
    try:
        return decode(data, name)
    except InputError as error:
        st.error(text(str(error)))
        return None


def current_input() -> InputImage | None:
    return st.session_state.get(INPUT_KEY)


@st.cache_resource(show_spinner="Loading the model (once for all users)…")
def model(name: str):
    return create_model(name)


@st.cache_resource
def _memos() -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


def memo_for(model_name: str, digest: str) -> Memo:
    """What a model already computed for this input, shared by every session (bounded LRU)."""
    memos, lock = _memos()
    with lock:
        key = (model_name, digest)
        memo = memos.pop(key, None)
        memos[key] = memo = {} if memo is None else memo  # most recently used last
        while len(memos) > MEMO_ENTRIES:
            memos.popitem(last=False)
        return memo


def analyze(model_name: str, image: InputImage, settings: dict[str, float] | None = None) -> Trace:
    with st.spinner("Running the network…"):
        return model(model_name).analyze(image, settings, memo_for(model_name, image.digest))


@st.cache_data(max_entries=64, show_spinner="Computing Grad-CAM…")
def exit_heatmap(model_name: str, digest: str, exit_index: int, target: int, _image: InputImage) -> Heatmap:
    """Grad-CAM of one exit's class, cached per input (``digest`` stands for the unhashed image)."""
    return grad_cam(model(model_name).explain_exit(_image, exit_index, target))


def knob_sliders(model_name: str) -> dict[str, float]:
    """A slider per decision knob, starting at the model's default operating point."""
    return {
        knob.name: st.slider(
            knob.label, knob.low, knob.high, knob.default, knob.step, help=knob.help, key=f"{model_name}:{knob.name}"
        )
        for knob in model(model_name).knobs()
    }


def answer_header(trace: Trace, decision: str, detail: str) -> None:
    """The answer first: label, confidence, where it was decided and the cost."""
    label, where, cost, latency = st.columns(4)
    label.metric(
        "Answer",
        trace.prediction.label,
        f"{trace.prediction.confidence:.0%} sure",
        delta_color="off",
        delta_arrow="off",
    )
    where.metric("Stopped at stage", decision, detail, delta_color="off", delta_arrow="off")
    cost.metric(
        FLOPS_UNIT,
        format_flops(trace.cost.flops),
        f"{trace.cost.fraction:.0%} of {format_flops(trace.cost.flops_full)} static",
        delta_color="off",
        delta_arrow="off",
    )
    latency.metric(
        "Latency", f"{trace.cost.latency_ms:.0f} ms", help="Measured wall time of the parts that ran, on this server."
    )


def card_table() -> pd.DataFrame:
    """The bundled models, one row each, from their cards."""
    return pd.DataFrame(model_table())


def show_card(card: ModelCard) -> None:
    about = card.about
    st.markdown(f"**{about.title}** — {about.family}")
    st.write(about.summary)
    st.markdown("**Papers**\n" + "\n".join(f"- {p}" for p in about.papers))
    st.markdown(f"**Data**: {about.data}  \n**License**: {about.license}")
    if card.recipe:
        st.markdown(f"**Recipe** ({card.recipe.seconds:.0f} s on {card.recipe.machine}):")
        st.code(card.recipe.command, language="bash")
    if card.evaluation:
        evaluation = card.evaluation
        st.markdown(f"**Measured** on {evaluation.data}, split `{evaluation.split}`, {evaluation.images} images, by:")
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
            }
            for p in (*evaluation.points, *evaluation.baselines)
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
