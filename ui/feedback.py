"""How the studio reports a failed service call: what failed, why, the URL tried; never a traceback."""

from __future__ import annotations

import streamlit as st

from ui.client import ServiceError

SERVICE_HINT = (
    "Check the service URL in the sidebar, or start the service with `python -m serving serve` "
    "(or everything at once with `python -m serving demo`)."
)


def service_error_text(action: str, error: ServiceError) -> str:
    """Markdown for a failed call: the action, the service's message, the URL tried and what to do."""
    status = f" · HTTP {error.status}" if error.status is not None else ""
    hint = f"\n\n{SERVICE_HINT}" if error.status is None or error.status >= 500 else ""
    return f"**{action} failed.** {error.message.rstrip('.')}.\n\nURL tried: `{error.url}`{status}{hint}"


def show_service_error(action: str, error: ServiceError) -> None:
    st.error(service_error_text(action, error), icon=":material/cloud_off:")
