import streamlit as st

from dynviz import ui
from dynviz.compare import compare, savings_by_family
from dynviz.inputs import InputImage
from dynviz.video import InputVideo
from dynviz.viz.compare import rows_table, savings_chart

st.title("Compare: one photo through every model")
st.caption(
    "Every bundled model on the same input, at its default settings: what it answered, the share of its "
    "static twin's FLOPs it saved, and what it decided (in the picture: focus boxes, skipped positions, the "
    "points the last deformable layer sampled and the tokens tinted by their expert, on the photo; below it, one "
    "cell per exit, block, gated layer or frame, coloured where it ran, and per expert or expert kernel, filled "
    "by its share). CIFAR-10 models "
    "see the photo's central square at 32×32 pixels and answer in CIFAR-10's ten classes."
)

VIEWS = ("Easy and hard examples, side by side", "The input chosen in the sidebar")
uploaded = st.session_state.get("source", "Example photos") != "Example photos"  # an upload, a clip, the camera
view = st.radio("Show", VIEWS, index=int(uploaded), horizontal=True, key="compare_view")


def comparison(image: InputImage | InputVideo, key: str) -> None:
    traces = ui.every_model(image)
    families = {t.model: ui.family(t.model) for t in traces}
    rows = compare(traces, families)
    st.plotly_chart(savings_chart(savings_by_family(rows)), key=f"{key}:savings")
    pictures = ui.decision_pictures(image, traces)
    selection = st.dataframe(
        rows_table(rows, pictures),
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=f"{key}:table",
        row_height=92,
        column_config={
            "decision": st.column_config.ImageColumn("decision", width="small"),
            "confidence": st.column_config.NumberColumn("confidence", format="%.0f%%"),
            "FLOPs saved": st.column_config.NumberColumn("FLOPs saved", format="%.1f%%"),
            "spent (M)": st.column_config.NumberColumn(format="%.1f"),
            "static twin (M)": st.column_config.NumberColumn(format="%.1f"),
            "latency (ms)": st.column_config.NumberColumn(format="%.1f"),
        },
    )
    st.caption(
        "FLOPs are multiply–adds (M: millions); the static twin is the network each model would be without its "
        "decisions. Click a column's header to sort by it; select a row to open that model's own page on this input."
    )
    if selection.selection.rows:
        row = rows[selection.selection.rows[0]]
        del st.session_state[f"{key}:table"]  # coming back, the table is not still asking to leave
        ui.open_model_page(image, row.model, row.family)


if view == VIEWS[0]:
    entries = ui.examples()
    easy = next(e for e in entries if e["scene"].startswith("easy"))
    hard = next(e for e in entries if e["scene"].startswith("hard"))
    left, right = st.columns(2)
    for entry, column, key in ((easy, left, "easy"), (hard, right, "hard")):
        with column:
            st.subheader(f"{entry['scene'].split(':')[0].capitalize()}: {entry['title']}")
            image = ui.example(entry)
            st.image(ui.shown(image), width=240)
            comparison(image, key)
else:
    image = ui.required_input()
    if (video := ui.current_video()) is not None:
        st.subheader(f"The clip through every video model: {video.name}")
        comparison(video, "clip")
        st.subheader(f"One of its frames through every image model: {image.name}")
    for note in image.notes:
        st.caption(f"Note: {ui.text(note)}")
    comparison(image, "chosen")
