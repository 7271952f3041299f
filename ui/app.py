"""Streamlit entry of the Moodshift studio: page setup, session defaults, sidebar, navigation.

Run: `python -m serving demo` (the service and this app together), or `python -m streamlit run ui/app.py`
with MOODSHIFT_SERVICE_URL pointing at a running service (`ui/launch.py` has the flags the demo adds).
"""

import sys
from pathlib import Path

# `streamlit run ui/app.py` puts ui/ on sys.path, not the repository root that holds `ui` and `serving`.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from ui.sidebar import demo_banner, render_sidebar  # noqa: E402
from ui.state import init_state  # noqa: E402

st.set_page_config(page_title="Moodshift studio", page_icon=":material/palette:", layout="wide")
init_state()
# Page scripts live in views/, not pages/: a pages/ folder next to the entry switches Streamlit to its older
# folder-based navigation for the first run (and for every AppTest run), which fights st.navigation.
page = st.navigation(
    [
        st.Page("views/studio.py", title="Studio", icon=":material/palette:", default=True),
        st.Page("views/history.py", title="History", icon=":material/photo_library:"),
    ]
)
info = render_sidebar()
demo_banner(info)
page.run()
