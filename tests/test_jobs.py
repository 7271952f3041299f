"""The edit job store: states, progress, cancel at any point."""

import threading

import pytest

from serving.core.errors import NotFoundError, QueueFullError
from serving.jobs import JobRunner, JobStore


def test_job_runs_through_its_states():
    store = JobStore()
    job = store.create(total=10)
    assert store.get(job.job_id).to_dict()["state"] == "queued"
    assert store.start(job.job_id, "segment")
    store.progress(job.job_id, 3, 10)
    assert store.get(job.job_id).to_dict() == {
        "job_id": job.job_id,
        "state": "running",
        "stage": "segment",
        "step": 3,
        "total": 10,
    }
    store.finish(job.job_id, {"images": ["x"]})
    status = store.get(job.job_id).to_dict()
    assert status["state"] == "done" and status["step"] == 10 and status["result"] == {"images": ["x"]}


def test_cancel_while_running_stops_the_next_stage_and_keeps_no_result():
    store = JobStore()
    job = store.create(total=4)
    assert store.start(job.job_id, "segment")
    store.cancel(job.job_id)
    assert not store.start(job.job_id, "diffusion"), "a cancelled job must not enter its next stage"
    store.finish(job.job_id, {"images": ["late"]})
    status = store.get(job.job_id).to_dict()
    assert status["state"] == "cancelled" and "result" not in status


def test_cancel_while_queued_ends_it_at_once():
    store = JobStore()
    job = store.create(total=4)
    assert store.cancel(job.job_id) == "cancelled"
    assert not store.start(job.job_id, "starting")


def test_finished_jobs_are_forgotten_in_the_order_they_finished():
    store = JobStore(max_finished=1)
    long_job, short_job = store.create(total=4), store.create(total=4)
    store.finish(short_job.job_id, {"images": ["s"]})
    store.finish(long_job.job_id, {"images": ["l"]})  # created first, finished last: its client has yet to poll
    store.create(total=4)
    assert store.status(long_job.job_id)["result"] == {"images": ["l"]}
    with pytest.raises(NotFoundError, match="unknown or expired"):
        store.status(short_job.job_id)


def test_finished_results_are_bounded_by_their_size_and_the_newest_is_kept():
    store = JobStore(max_result_bytes=1000)
    first, second, third = (store.create(total=1) for _ in range(3))
    store.finish(first.job_id, {"images": ["x" * 600]})
    store.finish(second.job_id, {"images": ["y" * 600]})  # 1200 bytes together: the first finished goes
    assert store.counts() == {"done": 1, "queued": 1}
    assert store.status(second.job_id)["result"]["images"] == ["y" * 600]
    store.finish(third.job_id, {"images": ["z" * 5000]})  # alone over the bound, and still kept for its poll
    assert store.status(third.job_id)["state"] == "done" and store.counts() == {"done": 1}


def test_a_status_read_waits_for_a_change_in_progress():
    """A poll never reads a job half-updated (done without its result): it takes the store's lock."""
    store = JobStore()
    job = store.create(total=1)
    answers = []
    with store._lock:  # a change in progress
        reader = threading.Thread(target=lambda: answers.append(store.status(job.job_id)))
        reader.start()
        reader.join(timeout=0.3)
        assert reader.is_alive() and not answers
    reader.join(timeout=5)
    assert answers[0]["state"] == "queued"


def test_a_job_that_cannot_be_started_fails_and_frees_its_slot():
    runner = JobRunner(JobStore(), max_active=1, describe_error=str)
    with pytest.raises(RuntimeError):  # not called from a worker thread of an event loop: nothing can run it
        runner.submit(4, lambda job_id, control: {})
    assert runner.store.active_count() == 0 and runner.store.counts() == {"failed": 1}


def test_synchronous_edits_and_jobs_share_the_limit():
    runner = JobRunner(JobStore(), max_active=2, describe_error=str)
    runner.store.create(total=1)  # a queued job
    with runner.slot():  # and a synchronous edit: the limit is reached
        with pytest.raises(QueueFullError, match=r"too many edits in progress \(2\)"):
            runner.submit(4, lambda job_id, control: {})
        with pytest.raises(QueueFullError), runner.slot():
            pass
    with runner.slot():  # the synchronous edit ended: its place is free again
        pass
