"""Sections of the studio's pages; each draws one part and keeps its state in `st.session_state`."""
