"""The servers the project starts: a port checked first, a child that stops with its parent,
a password on the shared server; a study interrupted with Ctrl-C; four workers through one
server (a store that stops answering: tests/test_outages.py).

    python -m pytest tests/test_servers.py              # ports, the auth folder, --workers
    python -m pytest tests/test_servers.py -m slow      # real mlflow servers, real signals

Everything is real and on 127.0.0.1: `python -m experiments ui` / `server --auth` processes,
MLflow's basic-auth app, SIGTERM / SIGKILL / SIGINT sent to the command's own process.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.__main__ import main as cli
from experiments.search import launch as search_launch
from experiments.services import auth
from tests.helpers import RunIf, child_env, free_port, run_cli, start_cli, stop_group, tiny
from tests.helpers.servers import (
    assert_port_closes_when_killed,
    kill_listeners,
    start_server,
    wait_listening,
)
from tests.test_search import study_trials

PORTS = range(5660, 5700)  # this file's share of the project's test port range


# --- fast: refused ports, the auth folder, --workers ----------------------------------


def test_ui_server_and_serve_refuse_a_taken_or_invalid_port(tmp_path, capsys):
    store = ["--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port(PORTS)))
        busy.listen()
        taken = busy.getsockname()[1]
        for argv in (
            ["ui", "--port", str(taken), *store],
            ["serve", "models:/any/1", "--port", str(taken), *store],
            ["ui", "--port", "99999", *store],
            ["serve", "models:/any/1", "--port", "0", *store],
            ["server", "--backend-store-uri", f"sqlite:///{tmp_path}/s.db", "--port", "70000"],
        ):
            assert cli(argv) == 2, argv
            err = capsys.readouterr().err
            port = argv[argv.index("--port") + 1]
            expected = (
                f"cannot listen on 127.0.0.1:{port}"
                if port == str(taken)
                else "must be in 1..65535"
            )
            assert f"error: --port {port}: {expected}" in err, (argv, err)
            assert "Traceback" not in err


def test_the_auth_folder_is_created_once_private_and_reused(tmp_path):
    folder = tmp_path / "auth"
    env, lines = auth.prepare(folder)
    password = env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert len(password) >= 12
    assert password in "\n".join(lines)  # printed once, here
    kept = folder / auth.PASSWORD_FILE
    assert kept.read_text().strip() == password
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / auth.SECRET_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    config = (folder / "basic_auth.ini").read_text()
    assert f"database_uri = sqlite:///{folder.resolve()}/basic_auth.db" in config
    assert password not in config

    (folder / "basic_auth.db").write_bytes(b"")  # what MLflow's first start leaves
    again, lines = auth.prepare(folder)
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in again
    assert again["MLFLOW_FLASK_SERVER_SECRET_KEY"] == env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert "reusing" in lines[0] and str(kept) in lines[0] and password not in "\n".join(lines)
    assert kept.read_text().strip() == password


def test_more_workers_than_cores_are_accepted_with_the_measured_cost(capsys):
    cores = len(os.sched_getaffinity(0))
    search_launch.warn_about_workers(cores)
    assert capsys.readouterr().err == ""
    search_launch.warn_about_workers(cores + 1)
    err = capsys.readouterr().err
    assert f"warning: --workers {cores + 1} on {cores} CPU core(s)" in err
    assert "8 workers ran 16 trials/min against 54 with one worker" in err


# --- slow: the child server stops with its parent ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_ui_server_stops_when_ui_is_killed(tmp_path, signum):
    port = free_port(PORTS)
    proc = start_cli("ui", "--port", str(port), cwd=tmp_path)
    assert_port_closes_when_killed(proc, port, signum)


# --- slow: server --auth ----------------------------------------------------------------


def status_of(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=5")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
@RunIf(modules=["flask_wtf"])  # MLflow's `auth` extra: pip install -e ".[auth]"
def test_server_with_auth_refuses_strangers_and_logs_a_run_with_the_printed_password(
    tmp_path, fashion_dir, monkeypatch
):
    port = free_port(PORTS)
    url = f"http://127.0.0.1:{port}"
    command = [
        *(sys.executable, "-m", "experiments", "server", "--auth", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{tmp_path}/runs.db", "--workers", "1"),
        *("--artifacts-destination", str(tmp_path / "artifacts")),
        *("--auth-dir", str(tmp_path / "auth")),
    ]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_listening(port, proc)
        password = (tmp_path / "auth" / auth.PASSWORD_FILE).read_text().strip()
        assert status_of(url) == 401
        assert status_of(url, "admin", "not-the-password") == 401
        assert status_of(url, "admin", password) == 200

        creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        result = run_cli(
            *("run", "s1-mlp", *tiny(fashion_dir, epochs=1), "--tracking-uri", url),
            cwd=tmp_path,
            env=child_env(**creds),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for key, value in creds.items():
            monkeypatch.setenv(key, value)
        client = MlflowClient(url)
        experiments = [e.experiment_id for e in client.search_experiments()]
        (run,) = client.search_runs(experiments)
        assert run.info.status == "FINISHED"
        assert "test/acc" in run.data.metrics
    finally:
        stop_group(proc, timeout=30)
        kill_listeners(port)
    out = proc.stdout.read()
    assert out.count(password) == 1  # printed once, at the first start
    assert not (tmp_path / "basic_auth.db").exists()  # not in the working directory


# --- slow: a study stopped with Ctrl-C ----------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_in_search_exits_130_and_says_how_to_resume(tmp_path, fashion_dir):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    # 40-epoch trials on the tiny data (seconds each): the Ctrl-C lands inside a trial.
    args = ["lr", "--trials", "3", "--tracking-uri", uri, *tiny(fashion_dir, epochs=40)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", "search", *args],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not any(  # a trial is training: its MLflow run is open
        t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
        for t in study_trials(tmp_path)
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no trial trained: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Study lr-s1-mlp was interrupted (SIGINT)" in err
    assert f"Resume it with: python -m experiments search lr --trials 3 --tracking-uri {uri}" in err
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert "RUNNING" not in {r.info.status for r in runs}
    assert "KILLED" in {r.info.status for r in runs}


# --- slow: load, 4 workers x 12 trials, runs through a real mlflow server ----------------

LOAD_WORKERS, LOAD_TRIALS = 4, 12


def run_load(tmp_path: Path, fashion_dir: Path, url: str, storage: str) -> optuna.Study:
    """`search lr --workers 4 --trials 12` of one-epoch tiny trials into `storage`, runs
    logged to the server at `url`; checks the study and its MLflow runs; returns the study."""
    name = "load"
    args = [
        *("search", "lr", "--workers", str(LOAD_WORKERS), "--trials", str(LOAD_TRIALS)),
        *("--storage", storage, "--study-name", name, "--tracking-uri", url),
        *tiny(fashion_dir, 1),
        *("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"),
    ]
    done = run_cli(*args, cwd=tmp_path, env=child_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    study = optuna.load_study(study_name=name, storage=search_storage(storage))
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == LOAD_TRIALS, [t.state for t in study.trials]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len({t.number for t in finished}) == LOAD_TRIALS

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("fashion-mnist")
    runs = client.search_runs([experiment.experiment_id], f"tags.study_name = '{name}'")
    parents = [r for r in runs if r.data.tags.get("study_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("study_role") == "trial"]
    assert len(parents) == 1
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    by_trial = {int(r.data.tags["trial_number"]): r for r in children}
    assert len(children) == LOAD_TRIALS  # one run per trial
    assert sorted(by_trial) == sorted(t.number for t in finished)
    for trial in finished:
        run = by_trial[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        # `epoch` is Lightning's own key, logged beside every logging step (fit and test)
        keys = [k for k in run.data.metrics if not k.startswith("system/") and k != "epoch"]
        assert "val/acc" in keys and "train/loss" in keys, keys
        for key in keys:  # one epoch: one point per metric, none lost, none doubled
            history = client.get_metric_history(run.info.run_id, key)
            assert len(history) == 1, (trial.number, key, history)
    return study


def search_storage(storage: str):
    if storage.startswith("postgresql"):
        return storage
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))


@pytest.mark.slow
def test_four_workers_count_twelve_trials_once_on_the_journal_file(tmp_path, fashion_dir):
    port = free_port(PORTS)
    server = start_server(tmp_path, port)
    try:
        wait_listening(port, server)
        run_load(tmp_path, fashion_dir, f"http://127.0.0.1:{port}", str(tmp_path / "j.log"))
    finally:
        stop_group(server, timeout=30)
        kill_listeners(port)
