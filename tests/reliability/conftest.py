"""Fixtures of the reliability suite (one real service shared by every group, a stand-in Ollama that can be stopped
and restarted on its port) and the summary printed at the end: one line per group, cases tried and passed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

import httpx
import pytest

from serving.ollama_standin import FakeOllama, default_replies
from tests.reliability.server import SUITE_ENV, LiveService

GROUPS = {
    "test_bad_inputs.py": "bad-inputs",
    "test_load.py": "load",
    "test_faults.py": "faults",
    "test_nothing_lost.py": "nothing-lost",
}


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllama]:
    """The session's stand-in Ollama (the service is configured with its port for the whole session)."""
    fake = FakeOllama().start()
    yield fake
    fake.stop()


@pytest.fixture()
def ollama(fake_ollama: FakeOllama) -> Iterator[FakeOllama]:
    """The stand-in Ollama, up, with default replies, no delay and no recorded requests; reset again after."""

    def reset() -> None:
        fake_ollama.replies = dict(default_replies())
        fake_ollama.delay_s = fake_ollama.chunk_delay_s = 0.0
        fake_ollama.requests.clear()
        if not fake_ollama.running:
            fake_ollama.start()

    reset()
    yield fake_ollama
    reset()


@pytest.fixture(scope="session")
def service(fake_ollama: FakeOllama, tmp_path_factory) -> Iterator[LiveService]:
    """ONE real service (gateway + SAM + diffusion, tiny models) for the whole suite; stopped at the end."""
    live = LiveService({**SUITE_ENV, "MOODSHIFT_OLLAMA_HOST": fake_ollama.url}, tmp_path_factory.mktemp("service"))
    live.start()
    yield live
    live.stop()
    assert not live.killed, f"service workers ignored SIGTERM and were killed: {live.killed}"


@pytest.fixture()
def api(service: LiveService) -> Iterator[httpx.Client]:
    """An HTTP client for the service (a fresh connection pool per test: the service may have restarted)."""
    with httpx.Client(base_url=service.url, timeout=120) as client:
        yield client


# --- the summary ---------------------------------------------------------------------------------------------

_outcomes: dict[str, dict[str, str]] = defaultdict(dict)  # group -> nodeid -> passed/failed
_seconds: dict[str, float] = defaultdict(float)
_notes: dict[str, list[str]] = defaultdict(list)


def _group(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]  # relative to where pytest runs: the repository, tests/, or this folder
    if "/" in path and "reliability/" not in path:
        return None
    return GROUPS.get(path.rsplit("/", 1)[-1])


@pytest.fixture()
def note(request) -> Callable[[str], None]:
    """Add a fact (request counts, timings...) to this group's summary line."""
    group = _group(request.node.nodeid)
    return lambda text: _notes[group].append(text)


def pytest_runtest_logreport(report) -> None:
    group = _group(report.nodeid)
    if group is None:
        return
    _seconds[group] += report.duration
    if report.skipped and report.when != "teardown":
        _outcomes[group].pop(report.nodeid, None)
        return
    if report.failed:
        _outcomes[group][report.nodeid] = "failed"
    elif report.when == "call":
        _outcomes[group].setdefault(report.nodeid, "passed")


def pytest_terminal_summary(terminalreporter) -> None:
    if not _outcomes:
        return
    terminalreporter.write_sep("-", "reliability summary")
    for group in GROUPS.values():
        if group not in _outcomes:
            continue
        results = _outcomes[group].values()
        line = f"reliability {group}: {len(results)} cases tried, {sum(r == 'passed' for r in results)} passed"
        line += f" ({_seconds[group]:.0f} s)"
        if _notes[group]:
            line += " · " + " · ".join(_notes[group])
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"reliability suite: {sum(_seconds.values()):.0f} s in all")
