"""The edit job store: states, progress, cancel at any point."""

from serving.jobs import JobStore


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
    assert store.cancel(job.job_id).state == "cancelled"
    assert not store.start(job.job_id, "starting")
