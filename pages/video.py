import streamlit as st

from dynviz import ui
from dynviz.trace import GLANCED, PROCESSED, FrameRecord
from dynviz.units import spent_of_full
from dynviz.viz.video import (
    cumulative_flops,
    decision_charts,
    frame_strip,
    frame_table,
    label_timeline,
)
from dynviz.zoo import VIDEO, list_models

st.title("Video: which frames were looked at, and what it cost")
video = ui.required_video()

name = st.selectbox("Model", list_models(accepting=VIDEO), key="video_model")
controls, main = st.columns([1, 3])
with controls:
    st.markdown("**Decision knobs**")
    settings = ui.knob_sliders(name)
    st.caption("Frames already run for this clip are reused when a knob moves: only the decisions are re-made.")
trace = ui.analyze_video(name, video, settings)
frames = trace.records_of(FrameRecord)
processed = sum(r.action == PROCESSED for r in frames)
glanced = sum(r.action == GLANCED for r in frames)
with main:
    detail = f"{glanced} glanced at" if glanced else f"{len(frames) - processed} skipped"
    ui.answer_header(trace, f"{processed} of {len(frames)}", detail, decision_label="Frames looked at")
    for note in trace.notes:
        st.info(ui.text(note), icon=":material/info:")
    st.image(
        frame_strip(video, trace),
        caption=(
            "The clip in time order. Blue: looked at in full by the backbone (#: in the order chosen); orange: only glanced "
            "at (a cheap test, or the backbone at low resolution); faded grey: skipped. A red bar marks a scene cut."
        ),
    )

charts = decision_charts(trace)
columns = [column for _ in range(0, len(charts) + 1, 2) for column in st.columns(2)]  # two charts a row
for index, (chart, column) in enumerate(zip(charts, columns)):
    column.plotly_chart(chart, key=f"decision_{index}")
with columns[len(charts)]:
    st.plotly_chart(cumulative_flops(trace), key="flops")
    st.caption(
        f"This clip cost {spent_of_full(trace.cost.flops, trace.cost.flops_full)} of running the static network "
        "on every frame (dotted)."
    )
if all(r.prediction is not None for r in frames):
    st.plotly_chart(label_timeline(trace), key="labels")

with st.expander("The clip with the decisions drawn on it", expanded=True):
    player, _ = st.columns([3, 2])
    player.video(ui.annotated(name, video, trace), format="video/webm")
    player.caption(
        "Each frame framed in the colour of what the model did with it; the white box is what the backbone saw."
    )

if box := ui.folded("Against the static network on every frame", "against_every_frame"):
    with box:
        baseline = ui.model(name).baselines[0]
        if st.toggle(f"Run {baseline} on every frame too", key=f"{name}:every_frame"):
            static = ui.every_frame(baseline, video)
            st.markdown(
                f"**{static.prediction.label}** ({static.prediction.confidence:.0%}) on every frame, "
                f"in {static.cost.latency_ms / 1000:.1f} s; {name}: **{trace.prediction.label}** in "
                f"{trace.cost.latency_ms / 1000:.1f} s. Realised time ratio "
                f"{trace.cost.latency_ms / static.cost.latency_ms:.2f}× "
                f"for a FLOPs ratio of {trace.cost.fraction:.2f}×."
            )

ui.table_and_downloads("Frame by frame (table and downloads)", trace, video.digest, frame_table, "Frames")
ui.model_card(name)
