import streamlit as st

from dynviz import ui
from dynviz.models.base import ExplainsGates
from dynviz.trace import BlockRecord
from dynviz.units import spent_of_full
from dynviz.viz.gates import block_grid
from dynviz.viz.image import attribution_picture
from dynviz.zoo import list_models

st.title("Layer skipping: run only the blocks this input needs")
image = ui.required_input()

name = ui.model_choice(list_models(emitting=BlockRecord), "lite0_skip", "skip_model")
controls, chart = st.columns([1, 3])
with controls:
    settings = ui.knob_sliders(name)
trace = ui.analyze(name, image, settings)
blocks = trace.records_of(BlockRecord)
with controls:
    ui.threshold_captions(name, trace, "blocks")
with chart:
    ran = sum(b.executed for b in blocks)
    ui.answer_header(trace, f"{ran}/{len(blocks)}", f"{len(blocks) - ran} skipped", "Blocks run")
    for note in trace.notes:
        st.info(ui.text(note), icon=":material/info:")
usage, measured_on = ui.card_usage(name)
st.plotly_chart(block_grid(trace, usage, measured_on), key="blocks")
spread = (
    f" Grey whiskers, from the model card: where each gate's probability lies for 80% of {measured_on} (the tick: "
    "the median). A short whisker is a gate that decides about the same for every image: it thins the network "
    "rather than choosing by input."
    if usage is not None and usage.gate_spread is not None
    else ""
)
st.caption(
    f"Top: each block's gate, the probability that it should run, against θ; a dotted bar is a block without "
    f"a gate (it changes the feature map's shape, so it always runs).{spread} Bottom: what each block cost. This "
    f"input cost {spent_of_full(trace.cost.flops, trace.cost.flops_full)} of the static network."
)
ui.speed_metrics(name, image, settings, trace)

gated = [b for b in blocks if b.probability is not None]
if isinstance(ui.model(name), ExplainsGates):
    with st.expander("Why did a gate decide so? (Integrated Gradients)", expanded=True):
        chosen = st.selectbox(
            "Gate",
            gated,
            format_func=lambda b: f"{b.name}: p(run) = {b.probability:.2f}, {'ran' if b.executed else 'skipped'}",
            key=f"{name}:gate",
        )
        # On demand: 32 backward passes through the network take seconds, the rest of the page milliseconds.
        if st.toggle("Attribute this gate's decision (a few seconds)", key=f"{name}:attribute"):
            heatmap = ui.gate_heatmap(name, image.digest, chosen.index, tuple(b.executed for b in blocks), image)
            title = f"Which pixels pushed {chosen.name}'s gate to run?"
            st.image(attribution_picture(image.image, heatmap, "pushed to run"), caption=title)
        st.caption(
            "Integrated Gradients (captum) of the chosen gate's logit, from a black image to this one, along the path "
            "this input took through the earlier blocks. Bright: pixels that raised the gate's wish to run the block."
        )

ui.card_with_class_usage(name, "block")
