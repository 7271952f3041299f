"""Streamlit entry of the Moodshift studio: page setup, the service's /info, session defaults, sidebar, navigation.

Run: `python -m serving demo` (the service and this app together), or `python -m ui --port 8501` with
MOODSHIFT_SERVICE_URL pointing at a running service.
"""

import sys
from pathlib import Path

# `streamlit run ui/app.py` puts ui/ on sys.path, not the folder that holds the `ui` package.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from ui.edit_options import edit_options  # noqa: E402
from ui.service_info import service_info  # noqa: E402
from ui.sidebar import demo_banner, render_sidebar  # noqa: E402
from ui.state import init_state  # noqa: E402

st.set_page_config(page_title="Moodshift studio", page_icon=":material/palette:", layout="wide")
init_state()  # first: the service URL that /info is asked at
info, info_error = service_info()
init_state(edit_options(info))  # the generation settings take the service's defaults and bounds
# Page scripts live in views/, not pages/: a pages/ folder next to the entry switches Streamlit to its older
# folder-based navigation for the first run (and for every AppTest run), which fights st.navigation.
page = st.navigation(
    [
        st.Page("views/studio.py", title="Studio", icon=":material/palette:", default=True),
        st.Page("views/history.py", title="History", icon=":material/photo_library:"),
    ]
)
render_sidebar(info, info_error)
demo_banner(info)
page.run()
