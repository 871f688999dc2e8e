"""A tracking store that stops answering: a run rides out a short outage, ends cleanly after a
long one and resumes; a SQLite lock held longer than the client waits ends it like an outage;
the system metrics go on after their requests failed.

    python -m pytest tests/test_outages.py -m slow

Everything is real: `python -m experiments server` processes on 127.0.0.1 stopped and
started again, SQLite locks held by another connection. Apart from tests/test_servers.py so
that the two files' waits (outages, lock timeouts) run on two test workers side by side.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from tests.helpers import child_env, free_port, run_cli, stop_group, tiny
from tests.helpers.servers import kill_listeners, start_server, wait_listening

PORTS = range(5700, 5740)  # this file's share of the project's test port range


def first_epoch_logged(client: MlflowClient, run: subprocess.Popen) -> str:
    """The id of the MLflow run that process `run` logs to, once it has a `val/acc` point
    (the test fails if the process ends first, or after 300 s)."""
    deadline = time.monotonic() + 300
    run_id = None
    while run_id is None or not client.get_metric_history(run_id, "val/acc"):
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"no epoch finished: {run.communicate()[1][-3000:]}")
        found = client.search_runs([e.experiment_id for e in client.search_experiments()])
        run_id = found[0].info.run_id if found else None
        time.sleep(0.5)
    return run_id


@pytest.mark.slow
def test_an_outage_beyond_the_retry_window_ends_the_run_cleanly_and_resume_finishes_it(
    tmp_path, fashion_dir
):
    from tests.test_faults import assert_continuous_history

    port = free_port(PORTS)
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    epochs = 4
    # A short retry window: one retry after 1 s, 3 s per request (the default is ~4 minutes).
    short = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    short["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "3"
    args = [*tiny(fashion_dir, epochs), "--data.batch_size", "8", "--tracking-uri", url]
    try:
        wait_listening(port, server)
        run = subprocess.Popen(
            [sys.executable, "-m", "experiments", "run", "s1-mlp", *args],
            cwd=tmp_path,
            env=child_env(**short),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = MlflowClient(url)
        run_id = first_epoch_logged(client, run)
        mlflow_server = psutil.Process(server.pid).children()[0]  # its own process group
        os.killpg(mlflow_server.pid, signal.SIGSTOP)  # stopped: it answers nothing
        try:
            _, err = run.communicate(timeout=120)
        finally:
            os.killpg(mlflow_server.pid, signal.SIGCONT)
        assert run.returncode == 1, err
        assert f"error: the tracking store {url} stopped answering during run {run_id}" in err
        assert f"resume it with: python -m experiments run --resume {run_id}" in err
        assert len(err.strip().splitlines()) <= 3, err  # the data line, the paragraph
        assert "Traceback" not in err
        last = tmp_path / "mlruns" / "checkpoints" / run_id / "last.ckpt"
        assert last.is_file()

        resumed = run_cli(
            *("run", "--resume", run_id, "--tracking-uri", url), cwd=tmp_path, env=child_env()
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        finished = client.get_run(run_id)
        assert finished.info.status == "FINISHED"
        assert "orphaned" in finished.data.tags["resume.1"]
        assert_continuous_history(url, run_id, epochs)
    finally:
        stop_group(server, timeout=30)
        kill_listeners(port)


@pytest.mark.slow
def test_a_short_outage_is_ridden_out_with_one_line_each_way_and_every_point(tmp_path, fashion_dir):
    port = free_port(PORTS)
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    epochs = 6
    args = [*tiny(fashion_dir, epochs), "--data.batch_size", "8", "--tracking-uri", url]
    args += ["--system-metrics-interval", "1"]
    try:
        wait_listening(port, server)
        run = subprocess.Popen(
            [sys.executable, "-m", "experiments", "run", "s1-mlp", *args],
            cwd=tmp_path,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = MlflowClient(url)
        run_id = first_epoch_logged(client, run)
        stop_group(server, timeout=10)  # the server is gone: connections are refused
        kill_listeners(port)
        time.sleep(15)
        server = start_server(tmp_path, port)  # the same store, back on the same port
        wait_listening(port, server)
        back_ms = time.time() * 1000
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert err.count(f"warning: the tracking store {url} does not answer") == 1, err
        assert err.count(f"the tracking store {url} answers again") == 1, err
        assert "Retrying" not in err and "Traceback" not in err
        finished = client.get_run(run_id)
        assert finished.info.status == "FINISHED"
        history = client.get_metric_history(run_id, "val/acc")
        assert len({m.step for m in history}) == epochs
        # the system metrics went on after the outage, their steps continuing
        system = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
        after = [m for m in system if m.timestamp > back_ms]
        assert after, f"no system metrics sample after the store came back: {system}"
        steps = sorted(m.step for m in system)
        assert steps == list(range(len(steps))), steps
    finally:
        stop_group(server, timeout=30)
        kill_listeners(port)


def first_run_with_an_epoch(db: Path) -> str | None:
    """The id of a run in SQLite store `db` with a `val/acc` point, read with sqlite3."""
    if not db.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            row = con.execute("SELECT run_uuid FROM metrics WHERE key = 'val/acc'").fetchone()
    except sqlite3.OperationalError:  # tables not created yet, or busy
        return None
    return row[0] if row else None


@pytest.mark.slow
def test_a_sqlite_lock_held_longer_than_the_client_waits_ends_the_run_cleanly(
    tmp_path, fashion_dir
):
    """MLflow's SQLite store waits 20 s for a lock (`PRAGMA busy_timeout = 20000`, fixed in
    MLflow); another process holding an exclusive lock longer ends the run like an outage."""
    from experiments.tracking import store
    from tests.test_faults import assert_continuous_history

    db = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{db}"
    epochs = 6
    args = [*tiny(fashion_dir, epochs), "--data.batch_size", "8", "--tracking-uri", uri]
    run = subprocess.Popen(
        [sys.executable, "-m", "experiments", "run", "s1-mlp", *args],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = None
    try:
        deadline = time.monotonic() + 300
        run_id = None
        while run_id is None:  # read with sqlite3: an MLflow client would migrate the db too
            if run.poll() is not None or time.monotonic() > deadline:
                run.kill()
                pytest.fail(f"no epoch finished: {run.communicate()[1][-3000:]}")
            run_id = first_run_with_an_epoch(db)
            time.sleep(0.5)
        lock = sqlite3.connect(db, timeout=60, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # held until the run has given up
        _, err = run.communicate(timeout=180)
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err
    assert f"error: the tracking store {uri} stopped answering during run {run_id}" in err
    assert "database is locked" in err
    assert f"resume it with: python -m experiments run --resume {run_id}" in err
    assert len(err.strip().splitlines()) <= 3, err[:5000]  # the data line, the paragraph
    assert "Traceback" not in err
    assert (store.checkpoint_dir(uri, run_id) / "last.ckpt").is_file()
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # the store could not be told

    resumed = run_cli(*("run", "--resume", run_id, "--tracking-uri", uri), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert "orphaned" in finished.data.tags["resume.1"]
    assert_continuous_history(uri, run_id, epochs)


@pytest.mark.slow
def test_system_metrics_go_on_after_the_store_failed_their_requests(tmp_path):
    """MLflow's monitor loop quits at a failed request; a SQLite lock held longer than the
    store waits (20 s, fixed in MLflow) fails its requests, and the samples go on after."""
    from experiments.tracking.system_metrics import KeptSystemMetrics

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("monitor")).info.run_id
    key = "system/cpu_utilization_percentage"
    monitor = KeptSystemMetrics(run_id, sampling_interval=0.5, tracking_uri=uri)
    monitor.start()
    try:
        deadline = time.monotonic() + 60
        while not client.get_metric_history(run_id, key):
            assert time.monotonic() < deadline, "no system metrics sample in 60 s"
            time.sleep(0.5)
        lock = sqlite3.connect(db, timeout=60, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(25)  # longer than the store's 20 s busy timeout: the monitor's requests fail
        lock.rollback()
        lock.close()
        released_ms = time.time() * 1000
        deadline = time.monotonic() + 60
        while not [m for m in client.get_metric_history(run_id, key) if m.timestamp > released_ms]:
            assert time.monotonic() < deadline, "no system metrics sample after the lock"
            time.sleep(0.5)
        assert monitor.restarts >= 1  # MLflow's loop had quit and was run again
    finally:
        monitor.finish()
    steps = sorted(m.step for m in client.get_metric_history(run_id, key))
    assert steps == list(range(len(steps))), steps
