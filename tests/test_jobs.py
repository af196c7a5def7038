"""Durable jobs: safe claiming across workers, heartbeats, cancellation, recovery after a crash
(real killed server processes), a separate worker process, and the CLI progress bar."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from rich.console import Console

from service.cli.job_watch import watch
from service.core.jobs import JobRunner
from service.core.worker_identity import is_dead_on_this_host, process_start_ticks, worker_name
from service.store import Store
from service.store.db import make_engine, migrate
from tests.conftest import unique
from tests.helpers import b64, upsert
from tests.test_durability import ServerProcess, servers  # noqa: F401  (fixture)
from tests.upgrade_helpers import lineage_with_gallery, train, upload_pairs, wait_job, wordnet

OLD, NEW, LABELS, IDS = wordnet()


@pytest.fixture
def store(database_url: str) -> Store:
    engine = make_engine(database_url)
    migrate(engine)
    yield Store(engine)
    engine.dispose()


def test_each_job_is_claimed_by_exactly_one_worker(store: Store) -> None:
    jobs = [store.create_job("k", None, {"n": i}).id for i in range(40)]
    claimed: dict[int, list[str]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim_job(name, ["k"])) is not None:
            with lock:
                claimed.setdefault(job.id, []).append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == jobs and all(len(v) == 1 for v in claimed.values())
    assert all(store.get_job(j).state == "running" for j in jobs)
    assert store.claim_job("late", ["k"]) is None


def test_heartbeat_cancel_and_recovery(store: Store) -> None:
    job = store.create_job("k", "s", {})
    assert store.claim_job("w1", ["other"]) is None, "kinds filter"
    assert store.claim_job("w1", ["k"]).id == job.id
    assert store.heartbeat(job.id, "w1", 0.5, "half", ["line"]) == "ok"
    assert store.get_job(job.id).progress == 0.5 and "line" in store.get_job(job.id).log
    store.request_cancel(job.id)
    assert store.heartbeat(job.id, "w1", 0.6, "more") == "cancel"
    assert store.finish_job(job.id, "w1", "cancelled")
    assert store.get_job(job.id).state == "cancelled"
    # a queued job is cancelled at once
    queued = store.create_job("k", None, {})
    assert store.request_cancel(queued.id).state == "cancelled"
    # a worker that stopped heart-beating loses its job: re-queued once, then failed
    lost = store.create_job("k", None, {}, max_attempts=2)
    store.claim_job("dead", ["k"])
    assert store.recover_jobs(timedelta(seconds=3600)) == [], "fresh heartbeat: left alone"
    assert store.recover_jobs(timedelta(seconds=0)) == [(lost.id, "queued")]
    assert store.heartbeat(lost.id, "dead", 0.9, "zombie") == "lost"
    assert store.claim_job("w2", ["k"]).attempts == 2
    assert store.recover_jobs(timedelta(seconds=3600), dead_workers=["w2"]) == [(lost.id, "failed")]
    failed = store.get_job(lost.id)
    assert failed.state == "failed" and "interrupted" in failed.error and failed.finished_at is not None
    assert not store.finish_job(lost.id, "w2", "succeeded"), "a recovered job cannot be finished by its old worker"


def test_a_restart_that_reuses_host_and_pid_requeues_at_start_up(store: Store) -> None:
    """A restarted container gets the same hostname and often the same pid: the earlier
    incarnation's jobs must be re-queued at start-up, not after JOB_STALE_SECONDS."""
    host, pid = socket.gethostname(), os.getpid()
    start = process_start_ticks(pid)
    earlier_me = f"{host}:{pid}:{start}:0123456789ab:abcdef"  # same pid and start, another boot
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reused = f"{host}:{sleeper.pid}:{(process_start_ticks(sleeper.pid) or 0) + 1}:0123456789ab:abcdef"
        alive = f"{host}:{sleeper.pid}:{process_start_ticks(sleeper.pid)}:0123456789ab:abcdef"
        sibling = worker_name()  # another runner in this very process
        assert is_dead_on_this_host(earlier_me) and is_dead_on_this_host(reused)
        assert not is_dead_on_this_host(alive) and not is_dead_on_this_host(sibling)
        assert not is_dead_on_this_host(f"elsewhere:{pid}:{start}:0123456789ab:abcdef"), "other hosts: heartbeat only"
        jobs = {}
        for name in (earlier_me, reused, alive, sibling):
            jobs[name] = store.create_job("k", None, {}).id
            assert store.claim_job(name, ["k"]).id == jobs[name]
        runner = JobRunner(store, {"k": lambda ctx: {}}, stale_seconds=3600)
        recovered = {j: state for j, state in runner.recover() if j in jobs.values()}  # the db is shared
        assert recovered == {jobs[earlier_me]: "queued", jobs[reused]: "queued"}
        assert store.get_job(jobs[alive]).state == store.get_job(jobs[sibling]).state == "running"
    finally:
        sleeper.kill()
        sleeper.wait()


def _lineage_with_pairs(url: str) -> tuple[str, str, str, int]:
    names = (unique("v1"), unique("v2"), unique("g"))
    with httpx.Client(base_url=url, timeout=60) as c:
        uid = lineage_with_gallery(c, names, OLD, NEW, IDS, LABELS)
        assert upload_pairs(c, uid, IDS, OLD, NEW, [str(x) for x in LABELS]).status_code == 200
    return (*names, uid)


def test_training_interrupted_by_a_crash_is_rerun_after_restart(servers, tmp_path: Path) -> None:  # noqa: F811
    url_db = f"sqlite:///{tmp_path / 'crash.db'}"
    server = servers(tmp_path / "data", url_db).start()
    _v1, _v2, _coll, uid = _lineage_with_pairs(server.url)
    slow = {"max_steps": 160, "min_steps": 160, "eval_every": 10, "patience": 1000}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        job_id = c.post(f"/v1/upgrades/{uid}/train", json={"method": "bt2", "params": slow}).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["progress"] < 0.05 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
    server.kill()  # mid-training: no shutdown hooks run

    server = servers(tmp_path / "data", url_db).start()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        job = wait_job(c, job_id, timeout=240)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2 and "[recovery]" in job["log_tail"]
        up = c.get(f"/v1/upgrades/{uid}").json()
        assert len(up["transformations"]) == 1, "the interrupted run left no transformation behind"
        assert not list((tmp_path / "data" / "transformations").glob("u*/*.partial"))
    server.stop()


def test_a_separate_worker_process_trains_and_the_service_picks_it_up(servers, tmp_path: Path) -> None:  # noqa: F811
    url_db = f"sqlite:///{tmp_path / 'w.db'}"
    server = servers(tmp_path / "data", url_db, NOBACKFILL_RUN_WORKER="false",
                     NOBACKFILL_ROUTING_REFRESH_SECONDS="0.2").start()
    v1, v2, coll, uid = _lineage_with_pairs(server.url)
    env = {**os.environ, "NOBACKFILL_DATA_DIR": str(tmp_path / "data"), "NOBACKFILL_DATABASE_URL": url_db,
           "NOBACKFILL_LOG_LEVEL": "warning"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        job_id = c.post(f"/v1/upgrades/{uid}/train", json={"method": "procrustes"}).json()["id"]
        time.sleep(1.0)
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "queued", "the service itself runs no jobs"
        worker = subprocess.Popen([sys.executable, "-m", "service.cli.main", "worker"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            job = wait_job(c, job_id, timeout=120)
            assert job["state"] == "succeeded", job
            assert str(worker.pid) in job["log_tail"], "run by the worker process"
            if not job["result"]["activated"]:
                c.post(f"/v1/upgrades/{uid}/activate", json={"force": True})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r = c.post(f"/v1/collections/{coll}/query", json={"model": v2, "vector_b64": b64(NEW[0])})
                if r.status_code == 200:
                    break
                time.sleep(0.1)
            assert r.status_code == 200 and r.json()["searched"][0]["route"] == [v2, v1]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    server.stop()


def test_queries_never_fail_during_training_and_backfill(client, live) -> None:
    v1, v2, coll = unique("v1"), unique("v2"), unique("g")
    uid = lineage_with_gallery(client, (v1, v2, coll), OLD, NEW, IDS, LABELS)
    assert upload_pairs(client, uid, IDS, OLD, NEW).status_code == 200
    train(client, uid)
    client.post(f"/v1/upgrades/{uid}/activate", json={"force": True})
    stop = threading.Event()
    errors: list[str] = []
    served = [0]

    def query_loop(model: str, vectors: np.ndarray) -> None:
        with httpx.Client(base_url=live.url, timeout=30) as q:
            i = 0
            while not stop.is_set():
                r = q.post(f"/v1/collections/{coll}/query", json={"model": model, "vector_b64": b64(vectors[i % 480]),
                                                                   "k": 5})
                if r.status_code != 200 or len(r.json()["hits"]) != 5:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                served[0] += 1
                i += 1

    threads = [threading.Thread(target=query_loop, args=a) for a in ((v2, NEW), (v1, OLD))]
    for t in threads:
        t.start()
    try:
        job = client.post(f"/v1/upgrades/{uid}/train", json={"method": "lambda_orth", "params": {"max_steps": 300}})
        for start in range(0, 480, 40):  # backfill everything while training runs
            chunk = list(range(start, start + 40))
            assert upsert(client, coll, v2, [IDS[i] for i in chunk], NEW[chunk], compact=True).status_code == 200
        done = wait_job(client, job.json()["id"])
        client.post(f"/v1/upgrades/{uid}/activate", json={"force": True})  # activation under load, too
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert done["state"] == "succeeded"
    assert errors == [] and served[0] > 50


def test_cli_watch_shows_progress_and_exit_status(client, live) -> None:
    v1, v2, coll = unique("v1"), unique("v2"), unique("g")
    uid = lineage_with_gallery(client, (v1, v2, coll), OLD[:150], NEW[:150], IDS[:150], LABELS[:150])
    assert upload_pairs(client, uid, IDS[:150], OLD[:150], NEW[:150]).status_code == 200
    job_id = client.post(f"/v1/upgrades/{uid}/train", json={"method": "affine"}).json()["id"]
    out = io.StringIO()
    assert watch(live.url, job_id, None, 0.05, Console(file=out, width=120)) == 0
    assert "succeeded" in out.getvalue() and "100%" in out.getvalue()
    queued = client.post(f"/v1/upgrades/{uid}/train", json={"method": "bt2", "params": {"min_steps": 10_000,
                                                                                         "max_steps": 10_000}})
    client.post(f"/v1/jobs/{queued.json()['id']}/cancel")
    out = io.StringIO()
    assert watch(live.url, queued.json()["id"], None, 0.05, Console(file=out, width=120)) == 1
    assert "cancelled" in out.getvalue()
    assert watch(live.url, 99_999, None, 0.05, Console(file=io.StringIO())) == 2
