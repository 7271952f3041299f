"""Service answers that outlive a cut run. Once a rerun is asked for (a click, the canvas reporting its size),
Streamlit stops the running script at its next Streamlit call, and writing `st.session_state` is one; with fast
reruns the next run may even start while the cut one still waits on the service. Either way the answer on its way was
lost and asked for again (every upload sent /segment twice). So each request's answer is a future kept in a plain
dict in the session (reading and filling it is no Streamlit call): a run that finds it waits for it instead of asking,
and it is forgotten only once a run has recorded it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import streamlit as st

from ui.client import ServiceError


@contextmanager
def answered_once(inbox: str, request: Hashable, waiting: str, ask: Callable[[], Any]) -> Iterator[Any]:
    """The answer to `request`, or the `ServiceError` it failed with: asked with `ask()` once, under a spinner saying
    `waiting`, however many runs want it. Record it inside the block; the answer is forgotten after that."""
    answers: dict[Hashable, Future[Any]] = st.session_state.setdefault(inbox, {})
    with st.spinner(waiting):  # entering is a Streamlit call: a cut here happens before anything is asked
        pending = answers.get(request)
        if pending is None:
            answers.clear()  # one request at a time: an older one is no longer wanted
            pending = answers[request] = Future()
            try:
                pending.set_result(ask())
            except ServiceError as exc:
                pending.set_result(exc)
            except BaseException as exc:  # a waiting run must not wait forever on a call that crashed
                pending.set_exception(exc)
                raise
        answer = pending.result()
    yield answer
    answers.pop(request, None)  # recorded: asking the same again later asks the service
