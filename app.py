"""dynviz: what dynamic neural networks compute, and what they skip, on your own photos."""

import streamlit as st

from dynviz.assets import FAVICON
from dynviz.runtime import timed_rerun
from dynviz.trace import (
    DeformableAttentionRecord,
    ExpertRecord,
    RoutingRecord,
    SamplingRecord,
)
from dynviz.ui import input_sidebar, offered, prefetch_after_the_page, warm_up

st.set_page_config(page_title="dynviz", page_icon=str(FAVICON), layout="wide")
# Every url_path differs from its file's name on purpose: while a pages/ folder sits beside
# app.py, Streamlit's legacy multipage discovery maps /<file name> to that file and runs it
# alone, without this script, so the sidebar's input picker would vanish.
pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="overview", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:", url_path="every-model"),
    st.Page("pages/early_exit.py", title="Early exit", icon=":material/exit_to_app:", url_path="early-exit"),
    st.Page("pages/layer_skipping.py", title="Layer skipping", icon=":material/fast_forward:", url_path="skip"),
    st.Page("pages/channel_gating.py", title="Channel selection", icon=":material/tune:", url_path="channels"),
    st.Page("pages/spatial.py", title="Spatial", icon=":material/center_focus_strong:", url_path="where"),
]
# A family's page is offered once one of its models is bundled (its weights may still be training).
if offered(SamplingRecord, DeformableAttentionRecord):
    pages.append(
        st.Page("pages/deformable.py", title="Deformable", icon=":material/scatter_plot:", url_path="sampling-points")
    )
if offered(RoutingRecord, ExpertRecord):
    pages.append(
        st.Page("pages/dynamic_parameters.py", title="Dynamic parameters", icon=":material/hub:", url_path="routing")
    )
pages += [
    st.Page("pages/video.py", title="Video", icon=":material/movie:", url_path="clips"),
    st.Page("pages/gallery.py", title="Easy vs hard", icon=":material/photo_library:", url_path="easy-vs-hard"),
    st.Page("pages/tradeoffs.py", title="Trade-offs", icon=":material/show_chart:", url_path="trade-off-explorer"),
]
navigation = st.navigation(pages)
with timed_rerun(navigation.title), prefetch_after_the_page():
    warm_up()
    input_sidebar()
    navigation.run()
