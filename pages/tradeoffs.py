import streamlit as st

from dynviz import ui
from dynviz.cards import load_card, validation_curve
from dynviz.gallery import exit_changes
from dynviz.trace import ExitRecord
from dynviz.units import FLOPS_UNIT, format_flops
from dynviz.viz.style import model_colors
from dynviz.viz.tradeoff import tradeoff_chart, training_curves
from dynviz.zoo import dynamic_models, list_models

SHOWN_CHANGES = 48
OPENING_MODEL = "msdnet_cifar"

st.title("Trade-offs: accuracy against computation")
st.caption(
    "Every point was measured by the eval command on the test images named in the model's card. A dynamic "
    "model is a curve: each operating point (exit thresholds, or a gate threshold θ) trades accuracy for FLOPs. "
    "Static networks are single points, and the dashed line joins the best static network at each cost: a dynamic "
    "curve above it pays off. Crosses are an early-exit model's single exits used for every image. The chart opens "
    "where the networks differ; double-click it to see every point."
)
dynamic = dynamic_models()
cards = [card for name in dynamic if (card := load_card(name)) and card.evaluation]
if not cards:
    st.warning("No dynamic model has an evaluated card yet.")
    st.stop()

names = [c.name for c in cards]
# Open on the early-exit network of the data set with the most models: a cheap exit for easy images, beside the
# static ResNets, the gated models and the other early-exit networks.
name = ui.model_choice(names, OPENING_MODEL, "tradeoff_model")
card = next(c for c in cards if c.name == name)
ordered = sorted(card.evaluation.points, key=lambda p: p.mean_flops)
default = card.point(card.default_point)
chosen = card.point(
    st.select_slider(
        "Operating point (cheapest left)",
        [p.name for p in ordered],
        value=default.name,
        format_func=lambda point: f"{point} · {format_flops(card.point(point).mean_flops)}",
        key=f"tradeoff_point:{name}",
    )
)
same_data = [c for c in cards if c.evaluation.data == card.evaluation.data]
statics = [
    static
    for static_name in list_models()
    if static_name not in dynamic
    and (static := load_card(static_name))
    and static.evaluation
    and (static.evaluation.data, static.evaluation.split) == (card.evaluation.data, card.evaluation.split)
]
# Clips: the static network on every frame, measured beside each video model on the same clips.
beside = {
    f"{b.name} on every frame": b for c in same_data if c.evaluation.unit == "clips" for b in c.evaluation.baselines
}
colors = model_colors([c.name for c in [*same_data, *statics]])
st.plotly_chart(tradeoff_chart(same_data, statics, (name, chosen.name), beside, colors), key="tradeoff")
evaluation = card.evaluation
st.caption(f"Measured on {evaluation.data} ({evaluation.split} split, {evaluation.images} {evaluation.unit}).")
if curves := {c.name: curve for c in [*same_data, *statics] if (curve := validation_curve(c))}:
    if box := ui.folded(
        "How the models on this data trained: validation accuracy after each epoch", "how_they_trained"
    ):
        with box:
            st.plotly_chart(training_curves(curves, colors), key="training_curves")
            st.caption(
                "On the images held out of the training split (never the test split), after each epoch of each model's "
                "recipe (the last exit of an early-exit model; a fine-tuned model's curve starts from its twin). Each "
                "recipe's learning rate falls to zero at its last epoch, so every curve climbs and flattens there; a "
                "longer schedule lifts the whole curve (the ResNet papers train for 160 epochs or more)."
            )

top1, flops, versus = st.columns(3)
against_default = {"delta": f"{chosen.top1 - default.top1:+.1%} vs default"}
if chosen == default:  # "↑ +0.0%" would read as a gain
    against_default = {"delta": "the default point", "delta_color": "off", "delta_arrow": "off"}
top1.metric("Top-1 at this point", f"{chosen.top1:.1%}", **against_default)
flops.metric(
    f"Mean {FLOPS_UNIT}",
    format_flops(chosen.mean_flops),
    f"{chosen.mean_flops / card.flops_full:.0%} of static",
    delta_color="off",  # a share of the static cost, not a rise
    delta_arrow="off",
)
if rates := chosen.exit_rates:
    # Seven exits' shares do not fit a metric's value: the first one there, the later ones beneath it.
    versus.metric(
        "Answered at each exit",
        f"{rates[0]:.0%} at the first",
        "then " + " · ".join(f"{r:.0%}" for r in rates[1:]) if len(rates) > 1 else None,
        delta_color="off",
        delta_arrow="off",
    )

if name not in list_models(emitting=ExitRecord):
    st.stop()  # the gallery below groups images by exit
st.subheader("Which images change their exit?")
if chosen == default:  # nothing to compare, and no reason to run the gallery for it
    st.caption(
        f"Move the operating point away from the default “{default.name}” to see which gallery images leave "
        "at another exit."
    )
    st.stop()
st.caption(f"The gallery's images, decided at “{chosen.name}” against the default “{default.name}”.")
before = ui.gallery(name, None, default.settings)
after = ui.gallery(name, None, chosen.settings)
changes = exit_changes(before, after)
if not changes:
    st.info("No gallery image changes its exit between these two operating points.")
else:
    earlier = sum(a.exit < b.exit for b, a in changes)
    st.markdown(
        f"**{len(changes)}** of {len(before)} images change: {earlier} leave earlier, {len(changes) - earlier} later."
    )
    st.image(
        [ui.thumbnail_png(a.item.image.digest, a.item.image.image) for _, a in changes[:SHOWN_CHANGES]],
        caption=[f"exit {b.exit + 1} → {a.exit + 1}" for b, a in changes[:SHOWN_CHANGES]],
        width=64,
        output_format="PNG",  # as encoded: "auto" would re-encode it as JPEG at every rerun
    )
