import streamlit as st

from dynviz import ui
from dynviz.cards import against_twins
from dynviz.viz.tradeoff import twins_chart

st.title("dynviz: what a dynamic network chose to compute")
st.markdown(
    """
A **static** network spends the same computation on every input. A **dynamic** network adapts its
computation to the input: it stops early on an easy photo, skips layers or channels it does not need,
looks only at the regions that matter, or processes only a few frames of a video. The survey
*Dynamic Neural Networks: A Survey* (Han, Huang, Song, Yang, Wang, Wang; TPAMI 2021) sorts them in three families:

- **sample-wise**: the whole architecture or its parameters adapt per input (early exits, layer skipping, channel gating, mixtures of experts);
- **spatial-wise**: computation is spent where it matters in the image (pixel masks, glance-and-focus regions, resolution adaptation);
- **temporal-wise**: computation is spent where it matters in time (frame selection and skipping).

Pick a photo in the sidebar (a bundled example, your own upload, or the camera), then open a page.
Every page shows the answer first, then what the network computed (in colour) and skipped (in grey),
and what it cost in FLOPs (multiply–adds), always next to the static network's cost.
"""
)
st.subheader("What the bundled networks save")
st.plotly_chart(twins_chart(against_twins()), key="twins")
st.caption(
    "Each dynamic model at its default setting against its static twin, the network it would be without its "
    "decisions (an early-exit network's twin is itself with every exit run), both measured by the eval command on "
    "the same test images. Hover over a point for both figures; the Trade-offs page has every setting's."
)
st.subheader("Pages")
st.markdown(
    """
- **Compare**: one photo (or clip) through every bundled model: each one's answer, FLOPs against its static
  twin, latency and a small picture of its decision, and how much each family saved; a row opens that model's
  own page on the same input. The default view puts an easy and a hard photo side by side.
- **Early exit**: networks that stop as soon as they are confident: a cascade of EfficientNet-Lite networks
  for photos, and MSDNet with seven classifiers for CIFAR-10's 32×32 images. See the exit where it stopped,
  the confidence at each exit against its threshold, the FLOPs it saved, what the answering exit looked at,
  and for MSDNet which layers and scales were computed. Move a threshold and the decision is re-made at once,
  reusing what was already computed.
- **Layer skipping** and **Channel selection**: gates that decide, per input, which residual blocks run and which
  channels inside them are computed; a threshold θ trades accuracy for FLOPs, and the card shows how the
  paths differ by class, with the theoretical and the realised speed-up.
- **Spatial**: computation spent where it matters in the image: DynConv's pixel masks (which positions each
  block computed, with the theoretical and the realised speed-up), GFNet's glance and focus (the crops it
  chose, with a training-free and a learned policy side by side) and RANet's resolutions (a thumbnail first,
  the full image only when needed).
- **Deformable**: where each deformable layer sampled the photo for a position you pick (DCN), the points it
  reads through stacked layers and every position's mean offset; for deformable attention (DAT), where a
  query's keys were sampled and how much it attends to each.
- **Dynamic parameters**: which expert kernels each CondConv layer mixed for this photo, next to a second
  image's; for the mixture of experts, the expert each token went to and the load per expert, layer by layer.
- **Video**: a clip (bundled or uploaded) through the temporal models: which frames were glanced at, looked at
  closely or skipped, the label of every frame, the FLOPs against Lite0 on every frame, and the clip played
  back with the decisions drawn on it.
- **Easy vs hard**: a whole labelled set through an early-exit model: which images leave at the first exit,
  which need the last, per class; open any of them on the early-exit page.
- **Trade-offs**: accuracy against mean FLOPs for every operating point on the cards, next to static networks;
  slide along the curve and see which images change their exit.
"""
)
st.subheader("Bundled models")
st.caption(
    "From each model's card: accuracy and mean FLOPs at the default operating point, measured by the eval command."
)
st.dataframe(
    ui.card_table(),
    hide_index=True,
    height="content",
    column_config={  # the long texts get the room, the figures only theirs
        "model": st.column_config.TextColumn(width="medium", pinned=True),
        "what it is": st.column_config.TextColumn(width="large"),
        "measured on": st.column_config.TextColumn(width="medium"),
        "top-1 on other photos": st.column_config.TextColumn(width="medium"),
        "family": st.column_config.TextColumn(width="large"),
    },
)
