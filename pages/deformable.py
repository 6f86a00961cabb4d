import streamlit as st

from dynviz import ui
from dynviz.trace import DeformableAttentionRecord, SamplingRecord
from dynviz.viz.parameters import (
    attention_figure,
    offset_picture,
    position_picker,
    sampling_figure,
    stacked_picture,
)
from dynviz.zoo import list_models

st.title("Deformable: where did each layer look?")
image = ui.required_input()
models = list_models(emitting=SamplingRecord) + list_models(emitting=DeformableAttentionRecord)
name = st.selectbox("Model", models, key="deformable_model")
trace = ui.analyze(name, image)
samplings = trace.records_of(SamplingRecord)
attentions = trace.records_of(DeformableAttentionRecord)
records = samplings or attentions
mean_offset = sum(r.mean_offset for r in records) / len(records)
ui.answer_header(trace, f"{mean_offset:.1f} px", f"over {len(records)} layers", "Mean offset")
for note in trace.notes:
    st.info(ui.text(note), icon=":material/info:")

side = records[0].resolution
pick_key = f"{name}:pick"
# A click on the photo (below) picks a position: carry it into the sliders before they are drawn.
clicked = (st.session_state.get(pick_key) or {}).get("selection", {}).get("points", [])
if clicked and clicked[0].get("customdata") is not None:
    position = int(clicked[0]["customdata"])
    if st.session_state.get(f"{pick_key}:last") != position:
        st.session_state[f"{pick_key}:last"] = position
        st.session_state[f"{name}:column"], st.session_state[f"{name}:row"] = position % side, position // side
columns = st.columns(3)
column = columns[0].slider("Column", 0, side - 1, side // 2, key=f"{name}:column")
row = columns[1].slider("Row", 0, side - 1, side // 2, key=f"{name}:row")
position = row * side + column

if samplings:
    layer = columns[2].select_slider(
        "Layer", range(len(samplings)), len(samplings) - 1, format_func=lambda i: samplings[i].name, key=f"{name}:layer"
    )
    chosen, stacked = st.columns(2)
    with chosen:
        figure = position_picker(sampling_figure(image.image, samplings[layer], position), samplings[layer].box, side)
        st.plotly_chart(figure, key=pick_key, on_select="rerun", selection_mode="points")
        st.caption(
            "Grey rings: the regular 3×3 grid of the chosen position (blue cross on the right). Arrows: where the "
            "layer's learned offsets moved each sample for this photo; colour: its modulation (how much it counted). "
            "Click a cell of the photo, or use the sliders, to pick another position."
        )
    with stacked:
        depth = st.slider(
            "Stacked layers", 1, layer + 1, min(3, layer + 1), key=f"{name}:depth", help="Follow the samples back "
            "through this many deformable layers, ending at the chosen one: 9, 81, 729, 6561 points."
        )  # fmt: skip
        picture, question = stacked_picture(image.image, samplings[layer + 1 - depth : layer + 1], position)
        st.image(picture, caption=question)
        st.caption(
            "Every sample of the chosen layer followed back through the layers below it (the DCN paper's figure): "
            "where this position's answer really reads the photo. Size and colour: the product of the modulations "
            "along the way."
        )
    picture, question = offset_picture(image.image, samplings[layer])
    st.image(picture, caption=question)
    st.caption(
        "The field view: at every position of the chosen layer, its samples' mean offset; a regular convolution "
        "would draw no arrows at all."
    )
else:
    record_index = columns[2].select_slider(
        "Layer",
        range(len(attentions)),
        len(attentions) - 1,
        format_func=lambda i: attentions[i].name,
        key=f"{name}:layer",
    )
    record = attentions[record_index]
    head = st.radio(
        "Head", range(record.heads), format_func=lambda h: f"head {h + 1}", horizontal=True, key=f"{name}:head"
    )
    figure = position_picker(attention_figure(image.image, record, position, head), record.box, side)
    st.plotly_chart(figure, key=pick_key, on_select="rerun", selection_mode="points")
    st.caption(
        f"Grey rings: the {record.keys} reference points, a uniform grid. Arrows: where the offset network moved "
        f"them for this photo (one set for each of the {record.groups} groups of heads). Size and colour: how much the "
        "chosen query (blue cross) attends to each sampled key. Click a cell of the photo to pick another query."
    )
ui.model_card(name)
