import streamlit as st

from dynviz import ui
from dynviz.gallery import by_exit, easiest, exit_histogram, hardest
from dynviz.trace import ExitRecord
from dynviz.units import FLOPS_UNIT, format_flops
from dynviz.viz.gallery import class_exit_heatmap, exit_shares, result_table
from dynviz.zoo import list_models

SHOWN_PER_EXIT = 60
SHOWN_EXTREMES = 12

st.title("Easy and hard images: where does each one leave?")
st.caption(
    "An early-exit network run on a whole labelled set. Easy images leave at the first, cheapest exit; "
    "hard ones go on to the last, or are answered wrongly."
)
models = list_models(emitting=ExitRecord)
name = ui.model_choice(models, "msdnet_cifar", "gallery_model")
source = st.radio(
    "Images",
    ["Bundled sample", "A test split on this server"],
    horizontal=True,
    key="gallery_source",
    help="The bundled sample: 500 CIFAR-10 test images (50 per class) for CIFAR models, the example photos otherwise.",
)
folder = None
if source != "Bundled sample":
    folder = st.text_input(
        "Folder", placeholder="/data/cifar10 (with test/<class>/*.jpg, or cifar-10-batches-py/)", key="gallery_folder"
    )
    if not folder:
        st.stop()
point = ui.operating_point_picker(name, key=f"gallery_point:{name}")
settings = ui.model(name).operating_points()[point].settings
try:
    results = ui.gallery(name, folder, settings)
except (FileNotFoundError, ValueError) as error:
    st.error(ui.text(str(error)))
    st.stop()

labels = ui.model(name).labels
exits = results[0].last_exit + 1
groups = by_exit(results)
labelled = [r for r in results if r.correct is not None]
count, accuracy, flops = st.columns(3)
count.metric("Images", len(results))
if labelled:
    accuracy.metric("Top-1", f"{sum(r.correct for r in labelled) / len(labelled):.1%}")
mean_flops, full = sum(r.trace.cost.flops for r in results) / len(results), results[0].trace.cost.flops_full
flops.metric(
    f"Mean {FLOPS_UNIT}",
    format_flops(mean_flops),
    f"{mean_flops / full:.0%} of {format_flops(full)} static",
    delta_color="off",
    delta_arrow="off",
)

left, right = st.columns([2, 3])
with left:
    st.plotly_chart(exit_shares(groups, exits), key="shares")
with right:
    if labelled:
        st.plotly_chart(class_exit_heatmap(exit_histogram(results, labels, exits)), key="classes")
        st.caption("Each row is a true class: how many of its images each exit answered. Easy classes lean left.")

st.subheader("Images by the exit they took")
# Only the open tab draws its thumbnails: all of them at once were ~170 images to lay out at every visit.
tabs = st.tabs(
    [f"Exit {k + 1} ({len(groups.get(k, []))})" for k in range(exits)], on_change="rerun", key="gallery_exit"
)
for k, tab in enumerate(tabs):
    if not tab.open:
        continue
    with tab:
        group = groups.get(k, [])
        if not group:
            st.caption("No image left here at this operating point.")
            continue
        st.image(
            [ui.thumbnail_png(r.item.image.digest, r.item.image.image) for r in group[:SHOWN_PER_EXIT]],
            caption=[
                f"{r.trace.prediction.label} {r.confidence:.0%}" + (" ✗" if r.correct is False else "")
                for r in group[:SHOWN_PER_EXIT]
            ],
            width=64,
            output_format="PNG",  # as encoded: "auto" would re-encode it as JPEG at every rerun
        )
        if len(group) > SHOWN_PER_EXIT:
            st.caption(f"The {SHOWN_PER_EXIT} most confident of {len(group)}.")

st.subheader("Easiest and hardest")
extremes = {"easiest": easiest(results, SHOWN_EXTREMES), "hardest": hardest(results, SHOWN_EXTREMES)}
image_column = {"image": st.column_config.ImageColumn("image", width="small")}


def table(which: str):
    shown = extremes[which]
    return result_table(shown, labels, [ui.thumbnail_png(r.item.image.digest, r.item.image.image) for r in shown])


easy_column, hard_column = st.columns(2)
with easy_column:
    st.markdown("**Easiest**: answered at the first exit, and right, most confident first")
    st.dataframe(table("easiest"), column_config=image_column, hide_index=True, key="easiest")
with hard_column:
    st.markdown("**Hardest**: wrong (most confidently wrong first), then those that needed the last exit")
    st.dataframe(table("hardest"), column_config=image_column, hide_index=True, key="hardest")

candidates = extremes["easiest"] + extremes["hardest"]
if candidates:
    picked = st.selectbox(
        "Analyse one of them",
        candidates,
        format_func=lambda r: f"{r.item.image.name} (exit {r.exit + 1}, {r.trace.prediction.label} {r.confidence:.0%})",
        key="gallery_pick",
    )
    if st.button("Open it on the early-exit page", key="gallery_send"):
        ui.send_to_analysis(picked.item.image, name)
