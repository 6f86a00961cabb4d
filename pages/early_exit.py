import streamlit as st

from dynviz import ui
from dynviz.models.base import ExplainsExits
from dynviz.trace import ExitRecord, FocusRecord, NodeRecord, TokenGridRecord
from dynviz.units import spent_of_full
from dynviz.viz.exits import (
    computation_grid,
    cost_bars,
    exit_table,
    exit_timeline,
    token_map,
    top_classes,
)
from dynviz.viz.image import boxed_picture, network_view
from dynviz.viz.style import exit_color
from dynviz.zoo import list_models

st.title("Early exit: stop as soon as it is sure")
image = ui.required_input()

name = ui.model_choice(list_models(emitting=ExitRecord, unless=FocusRecord), "lite_cascade", ui.EXIT_MODEL_KEY)
controls, chart = st.columns([1, 3])
with controls:
    st.markdown("**Exit thresholds**")
    settings = ui.knob_sliders(name)
    st.caption(
        "Lower a threshold and more photos stop at that stage: cheaper, but riskier. "
        "Stages already computed for this photo are reused, not re-run."
    )
trace = ui.analyze(name, image, settings)
exits = trace.records_of(ExitRecord)
answered = trace.answered_at
with chart:
    ui.answer_header(trace, f"{answered.index + 1} of {len(exits)}", answered.name)
    for note in trace.notes:
        st.info(ui.text(note), icon=":material/info:")
    st.plotly_chart(exit_timeline(trace), key="timeline")
    st.caption(
        "Each bar is a stage, cheapest first. Its height is how sure that stage was; the black tick is the "
        "confidence it needed to stop. Grey hatched stages were never run."
    )

if trace.records_of(NodeRecord):
    view, grid = st.columns([1, 4])
    view.image(
        network_view(image.image, answered.view_box, answered.resolution),
        caption=f"What the network saw: {answered.resolution}×{answered.resolution} pixels",
    )
    with grid:
        st.plotly_chart(computation_grid(trace), key="grid")
        st.caption(
            "Every square is one layer at one scale; the triangles are the classifiers, all reading the coarsest "
            "scale. Coloured: computed for this image (the colour of the exit whose block it belongs to); grey: "
            "never computed, because the image left at the ticked exit."
        )

if stages := trace.records_of(TokenGridRecord):
    for stage, column in zip(stages, st.columns(len(stages))):
        column.plotly_chart(token_map(image.image, stage), key=f"tokens_{stage.stage}")
        if stage.handed_over:
            column.plotly_chart(token_map(image.image, stage, hint=True), key=f"hint_{stage.stage}")
    st.caption(
        "Each computed stage's grid of tokens over the part of the photo the network saw: the coarser the grid, "
        "the cheaper the stage. Shading: where the stage's class token attended in its last layer (its "
        "relationship map); below it, the attention bias the stage reused from the previous one (where it was "
        "told to look before it looked). Stages after the one that answered were never run."
    )

left, right = st.columns(2)
with left:
    st.plotly_chart(top_classes(answered.prediction, answered.index), key="top5")
    st.caption(f"The five most likely classes according to the answering stage, {answered.name}.")
with right:
    st.plotly_chart(cost_bars(trace), key="cost")
    st.caption(
        f"This photo cost {spent_of_full(trace.cost.flops, trace.cost.flops_full)} of the static network it replaces. "
        "Coloured: the stages it paid for; grey: what each static network pays on every photo."
    )

if isinstance(ui.model(name), ExplainsExits):
    with st.expander("What did the answering stage look at? (Grad-CAM)", expanded=True):
        show_overlay = st.toggle("Show the attribution", value=True, key="show_cam")
        heatmap = (
            ui.exit_heatmap(name, image.digest, answered.index, answered.prediction.index, image)
            if show_overlay
            else None
        )
        seen = (answered.view_box, f"seen by stage {answered.index + 1}", exit_color(answered.index))
        st.image(
            boxed_picture(image.image, [seen], heatmap, "Grad-CAM"),
            caption=f"Where did {answered.name} look for “{answered.prediction.label}”?",
        )
        st.caption(
            "Grad-CAM (captum's LayerGradCam) of the answering stage's top-1 class at its last feature map, "
            "upsampled onto the part of the photo that stage saw (the box). Bright: pixels that raised the score."
        )

ui.table_and_downloads("Stage by stage (table and downloads)", trace, image.digest, exit_table, "Stages")
ui.model_card(name)
