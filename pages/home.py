import streamlit as st

from dynviz import ui

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
st.subheader("Pages")
st.markdown(
    """
- **Early exit**: a cascade of networks that stops as soon as it is confident. See the stage where it stopped,
  the confidence at each stage against its threshold, the FLOPs it saved, and what the answering stage looked at.
  Move a threshold and the decision is re-made at once, reusing the stages already computed.
"""
)
st.subheader("Bundled models")
st.caption(
    "From each model's card: accuracy and mean FLOPs at the default operating point, measured by the eval command."
)
st.dataframe(ui.card_table(), hide_index=True)
