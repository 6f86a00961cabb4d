import streamlit as st

from dynviz import ui
from dynviz.cards import VARYING
from dynviz.trace import ExitRecord, FocusRecord, MaskRecord
from dynviz.units import spent_of_full
from dynviz.viz.exits import cost_bars, exit_timeline
from dynviz.viz.image import network_view
from dynviz.viz.spatial import focus_steps, mask_density_chart, mask_overlay, policy_map
from dynviz.zoo import list_models

st.title("Spatial: compute where it matters")
image = ui.required_input()
VIEWS = {"Pixel masks": "DynConv", "Regions": "GFNet: glance and focus", "Resolution": "RANet"}
# One view at a time: only the open one runs its model (tabs would run all three on every rerun).
view = st.segmented_control(
    "View", list(VIEWS), format_func=lambda v: f"{v} ({VIEWS[v]})", default="Pixel masks", key="spatial_view"
)
if view is None:
    st.stop()

if view == "Pixel masks":
    name = ui.model_choice(list_models(emitting=MaskRecord), "lite0_dynconv", "mask_model")
    controls, chart = st.columns([1, 3])
    with controls:
        settings = ui.knob_sliders(name)
        show = st.toggle("Show the mask", True, key="mask_shown")
    trace = ui.analyze(name, image, settings)
    masks = trace.records_of(MaskRecord)
    with controls:
        ui.threshold_captions(name, trace, "positions")
    computed, positions = sum(sum(m.computed) for m in masks), sum(len(m.computed) for m in masks)
    with chart:
        ui.answer_header(trace, f"{computed / positions:.0%}", f"{computed} of {positions}", "Positions computed")
        for note in trace.notes:
            st.info(ui.text(note), icon=":material/info:")
    # The page opens on the first block that computed anything here: a trained mask may switch a whole block off.
    first_computing = next((i for i, mask in enumerate(masks) if any(mask.computed)), 0)
    st.session_state.setdefault(f"{name}:layer", first_computing)
    layer = st.select_slider(
        "Block",
        range(len(masks)),
        format_func=lambda i: f"{masks[i].name} ({masks[i].resolution}²)",
        key=f"{name}:layer",
    )
    st.plotly_chart(mask_overlay(image.image, masks[layer], show), key="mask")
    st.caption(
        "Each cell is one position of the block's output grid, laid over the part of the photo the network saw. "
        "Green: the block computed it. Dimmed: skipped, the block's input passed through unchanged. Hover for the "
        "mask unit's probability."
    )
    usage, measured_on = ui.card_usage(name)
    st.plotly_chart(mask_density_chart(trace, usage, measured_on), key="densities")
    if usage is not None and usage.varying_gates is not None:
        st.caption(
            f"Circles, from the model card (right axis): the share of each block's positions whose mask decides by "
            f"input, computed for at least {VARYING:.0%} and at most {1 - VARYING:.0%} of {measured_on}; the "
            "other positions are computed, or skipped, for nearly every image."
        )
    ui.speed_metrics(name, image, settings, trace)
    ui.card_with_class_usage(name, "block")

if view == "Regions":
    name = st.selectbox("Model", list_models(emitting=FocusRecord), key="focus_model")
    knobs = ui.model(name).knobs()
    policy_knob = next(k for k in knobs if k.choices)
    controls = st.columns(2)
    with controls[0]:
        settings = ui.knob_sliders(name, leave_out=(policy_knob.name,))
    controls[1].caption(
        "Both policies run on the same photo with the same knobs: the class-activation peak needs no training; "
        "the learned policy was trained to choose the patches that help the classifier most, remembering those it "
        "has seen."
    )
    for policy, column in enumerate(st.columns(len(policy_knob.choices))):
        trace = ui.analyze(name, image, settings | {policy_knob.name: policy})
        answered = trace.answered_at
        with column:
            st.subheader(f"Policy: {policy_knob.choices[policy]}")
            st.metric(
                trace.prediction.label,
                f"{trace.prediction.confidence:.0%}",
                f"stopped at {answered.name.split(':')[0]} · {spent_of_full(trace.cost.flops, trace.cost.flops_full)}",
                delta_color="off",
                delta_arrow="off",
            )
            picture, question = focus_steps(image.image, trace)
            st.image(picture, caption=question)
            st.plotly_chart(exit_timeline(trace), key=f"timeline_{policy}")
            st.plotly_chart(cost_bars(trace), key=f"cost_{policy}")
            for record in trace.records_of(FocusRecord):
                chosen, crop = st.columns([3, 1])
                chosen.plotly_chart(policy_map(image.image, record), key=f"policy_{policy}_{record.step}")
                crop.image(
                    network_view(image.image, record.box, trace.records_of(ExitRecord)[record.step].resolution),
                    caption=f"focus {record.step}: the patch it looked at",
                )
    st.caption(
        "Boxes: the glance's whole view and each focus patch, in the order they were looked at. The bars: the "
        "confidence after each step, from a classifier on the features of everything seen so far, against its τ "
        "(grey hatched: steps never run). The heatmaps: each policy's score of every candidate patch, drawn on a "
        "cell around the patch's centre (for the class-activation policy, how much of the class activation map of "
        "the class predicted so far the patch holds); a patch already seen is never chosen again."
    )

if view == "Resolution":
    models = list_models(emitting=ExitRecord, unless=FocusRecord)
    name = ui.model_choice(models, "ranet_cifar", "resolution_model")
    controls, chart = st.columns([1, 3])
    with controls:
        settings = ui.knob_sliders(name)
    trace = ui.analyze(name, image, settings)
    answered = trace.answered_at
    with chart:
        side = answered.resolution
        ui.answer_header(trace, f"{side}×{side} px", answered.name, "Answered from")
        st.plotly_chart(exit_timeline(trace), key="resolution_timeline")
    exits = trace.records_of(ExitRecord)
    for record, column in zip(exits, st.columns(len(exits))):
        state = f"confidence {record.confidence:.0%}" if record.computed else "not computed"
        mark = " ← answered" if record.taken else ""
        column.image(
            network_view(image.image, record.view_box, record.resolution),
            caption=f"{record.name}: {state}{mark}",
            width=160,
        )
    st.caption(
        "What each exit's sub-network saw, lowest resolution first. An easy photo is recognised from the "
        "thumbnail and the larger views are never computed."
    )
