"""The service's `GET /info` as the studio knows it: asked at the session's service URL, remembered for a while."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ui.client import ServiceError, get_client

INFO_REFRESH_S = 30.0
_CACHE_KEY = "_info"


def service_info() -> tuple[dict[str, Any] | None, ServiceError | None]:
    """GET /info at `service_url`, remembered for `INFO_REFRESH_S` per URL so every rerun does not ask again."""
    url = st.session_state.service_url
    cached = st.session_state.get(_CACHE_KEY)
    if cached and cached["url"] == url and time.time() - cached["at"] < INFO_REFRESH_S:
        return cached["info"], cached["error"]
    info, error = None, None
    try:
        info = get_client(url).info()
    except ServiceError as exc:
        error = exc
    st.session_state[_CACHE_KEY] = {"url": url, "at": time.time(), "info": info, "error": error}
    return info, error


def last_info() -> dict[str, Any] | None:
    """The last /info answer without asking again (None when the last attempt failed or none was made)."""
    cached = st.session_state.get(_CACHE_KEY)
    return cached["info"] if cached else None


def forget_info() -> None:
    """Ask /info again on the next run (a new service URL, or the user pressed "Check again")."""
    st.session_state.pop(_CACHE_KEY, None)
