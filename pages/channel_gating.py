import streamlit as st

from dynviz import ui
from dynviz.cards import VARYING
from dynviz.trace import ChannelRecord
from dynviz.units import spent_of_full
from dynviz.viz.gates import (
    active_fraction_chart,
    channel_difference,
    channel_heatmap,
)
from dynviz.zoo import list_models

st.title("Channel selection: compute only the channels this input needs")
image = ui.required_input()

name = ui.model_choice(list_models(emitting=ChannelRecord), "lite0_channels", "channel_model")
controls, chart = st.columns([1, 3])
with controls:
    settings = ui.knob_sliders(name)
trace = ui.analyze(name, image, settings)
summary = trace.summary()
with controls:
    ui.threshold_captions(name, trace, "channels")
with chart:
    ui.answer_header(
        trace,
        f"{summary['active_channel_fraction']:.0%}",
        f"{summary['active_channels']} of {summary['channels']} channels",
        "Channels computed",
    )
    for note in trace.notes:
        st.info(ui.text(note), icon=":material/info:")
usage, measured_on = ui.card_usage(name)
st.plotly_chart(active_fraction_chart(trace, usage, measured_on), key="fractions")
varying = (
    f" Circles, from the model card: the share of each layer's channel gates that decide by input, on for at least "
    f"{VARYING:.0%} and at most {1 - VARYING:.0%} of {measured_on}; the other gates are on, or off, for nearly every "
    "image, a fixed subnetwork rather than a choice."
    if usage is not None and usage.varying_gates is not None
    else ""
)
st.caption(
    f"Bars: the share of each layer's gated channels that were computed for this input.{varying} This input cost "
    f"{spent_of_full(trace.cost.flops, trace.cost.flops_full)} of the static network."
)
ui.speed_metrics(name, image, settings, trace)
st.plotly_chart(channel_heatmap(trace), key="channels")
st.caption("Every gated channel of every layer; hover for its gate's probability of running.")

with st.expander("Two inputs side by side: which channels differ?", expanded=True):
    other = ui.second_input("channel_second")
    if other is not None:
        second = ui.analyze(name, other, settings)
        left, right = st.columns(2)
        for column, shown in ((left, trace), (right, second)):
            column.metric(
                ui.text(shown.input_name),
                shown.prediction.label,
                f"{shown.summary()['active_channel_fraction']:.0%} of channels, "
                f"{spent_of_full(shown.cost.flops, shown.cost.flops_full)}",
                delta_color="off",
                delta_arrow="off",
            )
        st.plotly_chart(channel_difference(trace, second), key="difference")
        st.caption("Green: computed for both; blue or orange: computed for one input only; grey: for neither.")

ui.card_with_class_usage(name, "block's channels")
