import streamlit as st

from dynviz import ui
from dynviz.trace import ExpertRecord, RoutingRecord, entropy
from dynviz.viz.image import attribution_picture
from dynviz.viz.parameters import expert_load, expert_tokens, routing_heatmap
from dynviz.zoo import list_models

st.title("Dynamic parameters: which kernels and experts did this input choose?")
image = ui.required_input()
models = list_models(emitting=RoutingRecord) + list_models(emitting=ExpertRecord)
name = st.selectbox("Model", models, key="parameters_model")
controls, header = st.columns([1, 3])
with controls:
    settings = ui.knob_sliders(name)
trace = ui.analyze(name, image, settings)
routings = trace.records_of(RoutingRecord)
experts = trace.records_of(ExpertRecord)


def attribution(decision: tuple[int, ...], title: str, key: str) -> None:
    """Integrated Gradients of one routing decision, on demand (32 backward passes take seconds)."""
    if st.toggle("Attribute this routing decision (a few seconds)", key=f"{name}:{key}:attribute"):
        heatmap = ui.routing_heatmap(name, image.digest, decision, image)
        st.image(attribution_picture(image.image, heatmap, "pushed towards it"), caption=title)
        st.caption(
            "Integrated Gradients (captum) of the router's score for the chosen expert, from a black image to this "
            "one. Bright: pixels that raised it."
        )


if routings:
    mean_entropy = sum(entropy(r.weights) for r in routings) / len(routings)
    with header:
        ui.answer_header(trace, f"{mean_entropy:.2f} nats", f"over {len(routings)} layers", "Routing entropy")
    other = ui.second_input("parameters_second")
    first, second = st.columns(2)
    first.plotly_chart(routing_heatmap(routings, f"{image.name}: {trace.prediction.label}"), key="routing")
    if other is not None:
        other_trace = ui.analyze(name, other, settings)
        title = f"{other.name}: {other_trace.prediction.label}"
        second.plotly_chart(routing_heatmap(other_trace.records_of(RoutingRecord), title), key="routing_second")
    st.caption(
        "Each row is one CondConv layer, each column one of its expert kernels; the colour is the weight this image "
        "gave the expert in the kernel mixed for it. Two images side by side: where their rows differ, the network "
        "ran different kernels for them."
    )
    if box := ui.folded("Why this routing? (Integrated Gradients)", "why_this_routing"):
        with box:
            layer_column, expert_column = st.columns(2)
            layer = layer_column.selectbox(
                "Layer", range(len(routings)), format_func=lambda i: routings[i].name, key=f"{name}:route_layer"
            )
            expert = expert_column.selectbox(
                "Expert",
                range(len(routings[layer].weights)),
                format_func=lambda k: f"expert {k + 1} (weight {routings[layer].weights[k]:.2f})",
                key=f"{name}:route_expert",
            )
            attribution((layer, expert), f"Which pixels raised expert {expert + 1} of {routings[layer].name}?", "route")
    ui.card_with_class_usage(name, "layer · expert", "routing weight")
else:
    loads = [max(r.load) for r in experts]
    with header:
        ui.answer_header(
            trace, f"{sum(loads) / len(loads):.0%}", f"of tokens, mean of {len(loads)} layers", "Busiest expert's load"
        )
    layer = st.select_slider(
        "Mixture layer", range(len(experts)), format_func=lambda i: experts[i].name, key=f"{name}:expert_layer"
    )
    record = experts[layer]
    tokens, load = st.columns([3, 2])
    tokens.plotly_chart(expert_tokens(image.image, record), key="tokens")
    load.plotly_chart(expert_load(experts), key="load")
    st.caption(
        f"Left: each of the image's {record.resolution}×{record.resolution} tokens, coloured by the expert the router "
        f"sent it to in {record.name} (hover: its gate). The class token went to expert {record.class_choice + 1}. "
        "Right: how the image's tokens spread over the experts in every mixture layer; only the chosen experts ran."
    )
    if box := ui.folded("Why did a token go to its expert? (Integrated Gradients)", "why_this_expert"):
        with box:
            side = record.resolution
            row_column, column_column = st.columns(2)
            row = row_column.slider("Token row", 0, side - 1, side // 2, key=f"{name}:token_row")
            column = column_column.slider("Token column", 0, side - 1, side // 2, key=f"{name}:token_column")
            token = row * side + column
            chosen = record.choices[token]
            attribution(
                (record.layer, token, chosen),
                f"Which pixels sent token ({row}, {column}) of {record.name} to expert {chosen + 1}?",
                "token",
            )
    ui.card_with_class_usage(name, "layer · expert", "share of tokens")
