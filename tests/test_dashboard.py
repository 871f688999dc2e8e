"""`python -m experiments dashboard`: Optuna Dashboard on a real journal storage.

    python -m pytest tests/test_dashboard.py            # refusals, in process
    python -m pytest tests/test_dashboard.py -m slow    # a real dashboard process

The studies are real Optuna studies in a journal file; the slow test starts the command as
a process on a free loopback port, reads its HTTP API, then stops it (SIGTERM, and kill -9
of the command alone: its server must follow) and checks the port is closed after.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import optuna
import pytest

from experiments.search.storage import open_storage
from experiments.services import dashboard
from tests.helpers import RunIf, free_port, start_cli, stop_group

PORTS = range(5650, 5680)  # this file's share of the project's test port range


def make_study(path, name="lr-s1-mlp", trials=3) -> str:
    storage = open_storage(str(path))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    with warnings.catch_warnings():  # experimental since Optuna 3.2, as the project uses it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val/acc"])

    def objective(trial):
        trial.set_user_attr(
            "mlflow_run", f"http://127.0.0.1:5000/#/experiments/1/runs/r{trial.number}"
        )
        return trial.suggest_float("lr", 1e-4, 1e-1, log=True)

    study.optimize(objective, n_trials=trials)
    return str(path)


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@RunIf(modules=["optuna_dashboard"])  # with the extra absent every command says only that
def test_refusals_name_the_problem(tmp_path, capsys):
    journal = make_study(tmp_path / "journal.log")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert dashboard.main(["--storage", journal, "--port", str(port)]) == 2
        assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err

    assert dashboard.main(["--storage", journal, "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0: the dashboard has no login" in err and "--allow-network" in err

    assert dashboard.main(["--storage", str(tmp_path / "none.log")]) == 2
    assert "no Optuna study storage at" in capsys.readouterr().err


def test_a_missing_extra_is_named_with_its_install_command(tmp_path, capsys, monkeypatch):
    journal = make_study(tmp_path / "journal.log")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if the extra were absent
    assert dashboard.main(["--storage", journal]) == 2
    assert "pip install -e '.[dashboard]'" in capsys.readouterr().err


def start(journal: str, port: int, tmp_path) -> subprocess.Popen:
    return start_cli("dashboard", "--storage", journal, "--port", str(port), cwd=tmp_path)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.slow
@RunIf(modules=["optuna_dashboard"])
def test_dashboard_serves_the_studies_and_stops_with_its_command(tmp_path):
    journal = make_study(tmp_path / "journal.log")
    port = free_port(PORTS)
    proc = start(journal, port, tmp_path)
    try:
        first = proc.stdout.readline()  # printed once the server answers
        assert first.startswith(
            f"Optuna Dashboard for {journal} at http://127.0.0.1:{port}/dashboard"
        )
        assert proc.stdout.readline().strip() == "lr-s1-mlp: 3 trials"
        (study,) = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert study["study_name"] == "lr-s1-mlp"
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        assert len(detail["trials"]) == 3
        assert detail["objective_names"] == ["val/acc"]  # not "Objective 0"
        attrs = {a["key"]: a["value"] for a in detail["trials"][2]["user_attrs"]}
        assert attrs["mlflow_run"].endswith("/runs/r2")

        proc.send_signal(signal.SIGTERM)  # the command: it stops its server
        assert proc.wait(timeout=30) == 143
        wait_for(lambda: port_closed(port), 30, f"port {port} to close after SIGTERM")
    finally:
        stop_group(proc)

    # kill -9 of the command alone (not its group): the server sees its pipe close and exits.
    proc = start(journal, port, tmp_path)
    try:
        proc.stdout.readline()
        assert not port_closed(port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: port_closed(port), 30, f"port {port} to close after kill -9")
    finally:
        stop_group(proc)
