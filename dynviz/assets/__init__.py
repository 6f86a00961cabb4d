from pathlib import Path

FAVICON = Path(__file__).with_name("favicon.svg")
"""The app's page icon: a path that forks, one branch taken (the colour the charts give what ran), one skipped. A
file, not a Material icon name: Streamlit fetches those from fonts.gstatic.com, which a closed network refuses."""
