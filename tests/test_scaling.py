"""Scaling out on loopback: a real PostgreSQL, a real `mlflow server`, real DDP processes.

    python -m pytest -m slow tests/test_scaling.py     # services, processes (slow)
    python -m pytest tests/test_scaling.py             # the server's pre-flight checks

* A private PostgreSQL cluster (initdb in a temporary folder, its own port in 55432-55439,
  run as the `postgres` user when the tests run as root), torn down afterwards.
* `python -m experiments server` on a port in 5600-5649, backed by that cluster, with
  proxied artifacts; runs are checked through the server's REST API.
* Two `python -m experiments search` processes sharing one PostgreSQL study.
* `python -m experiments run ... --trainer.strategy ddp --trainer.devices 2` on CPU,
  compared with one process at twice the per-process batch.

The PostgreSQL tests are skipped (`RunIf`) only when the PostgreSQL server binaries
(`apt-get install postgresql`) or its driver (`pip install -e ".[postgres]"`) are absent;
under EXPERIMENTS_REQUIRE_ALL=1 (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments.services import server
from experiments.training.config import parse
from experiments.training.runner import run_experiment
from tests.helpers import RunIf, child_env, data_overrides, free_port
from tests.helpers.run_if import pg_bin, require

PG_PORTS = range(55432, 55440)
MLFLOW_PORTS = range(5600, 5650)

# DDP with 2 processes at per-process batch B and one process at batch 2B see the same
# samples in every step (the loaders shard one shared permutation rank-interleaved) and
# average the same gradients, so they differ only by float32 summation order. Measured on
# the tiny data: |delta test/loss| <= 4e-9, |delta train/loss| <= 2.4e-7, test/acc equal.
# The tolerance leaves room for other CPUs' rounding, not for a different training run.
LOSS_TOLERANCE = 1e-4


#: What a test on the private PostgreSQL cluster needs.
NEEDS_POSTGRESQL = RunIf(postgres_server=True, postgres_driver=True)


# --- a private PostgreSQL cluster -------------------------------------------------------


@dataclass
class Postgres:
    port: int
    user: str
    password: str

    def url(self, database: str, *, with_password: bool = True) -> str:
        secret = f":{self.password}" if with_password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()

    def query(self, database: str, sql: str) -> list[tuple]:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url(database))
        with engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(sqlalchemy.text(sql))]
        engine.dispose()
        return rows


@pytest.fixture(scope="module")
def postgres():
    """initdb + pg_ctl start in a fresh folder on a free port; stopped and removed after."""
    require("postgres_server", "postgres_driver")  # the tests are marked; this guards the fixture
    bin_dir = pg_bin()
    # PostgreSQL refuses to run as root: run the cluster as the `postgres` user then. The
    # folder is made under /tmp, not pytest's tmp_path, whose root-only parent it cannot enter.
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="scaling-pg-", dir="/tmp"))
    password = secrets.token_hex(12)
    (folder / "pwfile").write_text(password + "\n")
    if as_root:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pwfile", "postgres")
    data = folder / "data"
    port = free_port(PG_PORTS)
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--pwfile",
            str(folder / "pwfile"),
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
    started = subprocess.run([*pg_ctl, "-o", options, "-w", "-t", "60", "start"], check=False)
    if started.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start on port {port}:\n{log[-3000:]}")
    try:
        yield Postgres(port=port, user="postgres", password=password)
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


# --- an MLflow server on it -------------------------------------------------------------


@dataclass
class Server:
    url: str
    artifacts: Path
    database: str

    def get(self, endpoint: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{endpoint}?{query}", timeout=30) as response:
            return json.loads(response.read())

    def get_bytes(self, endpoint: str, **params) -> bytes:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{endpoint}?{query}", timeout=30) as response:
            return response.read()


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`python -m experiments server` (the documented command) on a free loopback port."""
    postgres.create_database("mlflow")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port(MLFLOW_PORTS)
    log = folder / "server.log"
    # The password travels as PGPASSWORD, as experiments/docs/scaling-out.md recommends, not in the URL.
    env = child_env(PGPASSWORD=postgres.password)
    command = [
        sys.executable,
        "-m",
        "experiments",
        "server",
        "--backend-store-uri",
        postgres.url("mlflow", with_password=False),
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",  # passed on to `mlflow server`: one worker is enough for the tests
        "1",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # schema migrations + imports on a busy machine
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if _healthy(url):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"no /health answer from {url} in 240 s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield Server(url=url, artifacts=folder / "artifacts", database="mlflow")
    finally:
        # SIGTERM to `experiments server`, which stops mlflow's process group with it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- helpers ----------------------------------------------------------------------------


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    files = set()
    for item in client.list_artifacts(run_id, path):
        files |= _artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return files


def _rest_artifact_files(server: Server, run_id: str, path: str = "") -> set[str]:
    params = {"run_id": run_id, **({"path": path} if path else {})}
    listing = server.get("/api/2.0/mlflow/artifacts/list", **params)
    files = set()
    for item in listing.get("files", []):
        if item.get("is_dir"):
            files |= _rest_artifact_files(server, run_id, item["path"])
        else:
            files.add(item["path"])
    return files


# --- the tests --------------------------------------------------------------------------


@pytest.mark.slow
@NEEDS_POSTGRESQL
def test_run_on_postgresql_backed_server_matches_embedded_store(
    mlflow_server, postgres, fashion_dir, cifar_dir, tmp_path, monkeypatch
):
    """A run on the server records what the embedded store records. (MLFLOW_TRACKING_URI
    naming the server is read when a process starts: test_faults.py runs a process so.)"""
    monkeypatch.chdir(tmp_path)
    overrides = data_overrides("s1-mlp", fashion_dir, cifar_dir)
    served = run_experiment(parse("s1-mlp", overrides), mlflow_server.url)
    embedded_uri = f"sqlite:///{tmp_path}/embedded/mlflow.db"
    embedded = run_experiment(parse("s1-mlp", overrides), embedded_uri)
    assert served.tracking_uri == mlflow_server.url
    assert served.status == embedded.status == "FINISHED"

    # The run as the server's REST API returns it.
    run = mlflow_server.get("/api/2.0/mlflow/runs/get", run_id=served.run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    rest_params = {p["key"]: p["value"] for p in run["data"]["params"]}
    rest_metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    rest_tags = {t["key"]: t["value"] for t in run["data"]["tags"]}

    local = MlflowClient(embedded_uri).get_run(embedded.run_id)
    assert rest_params == local.data.params
    # system/* are sampled every 10 s: whether a short run has a sample depends on its length.
    assert {k for k in rest_metrics if not k.startswith("system/")} == {
        k for k in local.data.metrics if not k.startswith("system/")
    }
    for key, value in local.data.metrics.items():  # same config and seed on CPU
        if key.startswith("system/"):
            continue
        assert rest_metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    for key in ("task", "experiment", "dataset", "model_family", "seed", "lineage.source"):
        assert rest_tags[key] == local.data.tags[key]
    assert rest_metrics["test/acc"] == pytest.approx(served.test_metrics["test/acc"])
    history = mlflow_server.get(
        "/api/2.0/mlflow/metrics/get-history", run_id=served.run_id, metric_key="val/acc"
    )["metrics"]
    assert len(history) == len(
        MlflowClient(embedded_uri).get_metric_history(embedded.run_id, "val/acc")
    )

    # Artifacts: listed and downloaded through the server, stored in its destination folder.
    files = _rest_artifact_files(mlflow_server, served.run_id)
    assert files == _artifact_files(MlflowClient(embedded_uri), embedded.run_id)
    assert {"config.yaml", "checkpoints/best.ckpt"} <= files
    config = mlflow_server.get_bytes("/get-artifact", run_id=served.run_id, path="config.yaml")
    local_copy = MlflowClient(embedded_uri).download_artifacts(
        embedded.run_id, "config.yaml", str(tmp_path)
    )
    assert config.decode() == Path(local_copy).read_text()
    stored = {p.name for p in mlflow_server.artifacts.rglob("*") if served.run_id in str(p)}
    assert {"config.yaml", "best.ckpt"} <= stored

    # And the run is a row of the PostgreSQL database behind the server.
    rows = postgres.query(
        mlflow_server.database, f"SELECT status FROM runs WHERE run_uuid = '{served.run_id}'"
    )
    assert rows == [("FINISHED",)]


@pytest.mark.slow
@NEEDS_POSTGRESQL
def test_two_search_workers_share_one_postgresql_study(
    mlflow_server, postgres, fashion_dir, cifar_dir, tmp_path
):
    """Two processes run the same `search` command on one study: N trials, each once."""
    import optuna
    from optuna.trial import TrialState

    postgres.create_database("optuna")
    storage = postgres.url("optuna")
    trials = 4
    command = [
        sys.executable,
        "-m",
        "experiments",
        "search",
        "lr",
        "--storage",
        storage,
        "--trials",
        str(trials),
        "--study-name",
        "lr-two-workers",
        "--pruner",
        "none",
        "--tracking-uri",
        mlflow_server.url,
        *data_overrides("s1-mlp", fashion_dir, cifar_dir),
    ]
    workers = []
    for index in range(2):  # as on two hosts: the same command, started twice
        log = open(tmp_path / f"worker{index}.log", "wb")  # noqa: SIM115 (closed below)
        workers.append(
            (
                subprocess.Popen(
                    command, cwd=tmp_path, env=child_env(), stdout=log, stderr=subprocess.STDOUT
                ),
                log,
            )
        )
    for process, log in workers:
        try:
            process.wait(timeout=1200)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for (process, _), output in zip(workers, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]

    study = optuna.load_study(study_name="lr-two-workers", storage=storage)
    states = [t.state for t in study.trials]
    assert all(s.is_finished() for s in states), states
    assert states.count(TrialState.COMPLETE) == trials, states
    assert len(study.trials) == trials  # none failed, none extra
    assert sorted(t.number for t in study.trials) == list(range(trials))
    # Each worker process recorded itself on the trials it ran: both took part.
    owners = {t.user_attrs.get("worker", "").rsplit(":", 1)[0] for t in study.trials}
    assert len(owners) == 2, owners

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("fashion-mnist")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.study_name = 'lr-two-workers'"
    )
    parents = [r for r in runs if r.data.tags.get("study_role") == "parent"]
    trial_runs = [r for r in runs if r.data.tags.get("study_role") == "trial"]
    assert len(parents) == 1
    assert sorted(int(r.data.tags["trial_number"]) for r in trial_runs) == list(range(trials))
    assert all(r.info.status == "FINISHED" for r in trial_runs)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trial_runs)
    assert postgres.password not in json.dumps(parents[0].data.tags)


DDP_CASES = {
    # name: (per-process batch, epochs, overrides). Small learning rates keep the tiny
    # synthetic data from being fitted perfectly, so losses and accuracies still differ
    # between models and the comparison means something.
    "s0-mlp": (10, 2, ["--model.lr", "2e-5"]),
    "s0-cnn": (2, 1, ["--model.lr", "1e-4"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DDP_CASES))
def test_ddp_on_cpu_is_one_run_and_matches_one_process(name, fashion_dir, cifar_dir, tmp_path):
    batch, epochs, extra = DDP_CASES[name]
    overrides = [
        *data_overrides(name, fashion_dir, cifar_dir),
        *extra,
        "--trainer.max_epochs",
        str(epochs),
        "--seed",
        "3",
    ]
    uri = f"sqlite:///{tmp_path}/ddp/mlflow.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "run",
            name,
            "--tracking-uri",
            uri,
            *overrides,
            "--data.batch_size",
            str(batch),
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
            "-v",  # Lightning's INFO lines, which name the ranks it started
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout
    assert done.stdout.count("MLflow run ") == 1  # rank 1 prints no summary of its own

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp"
    assert run.data.params["trainer.devices"] == "2"
    assert {"test/acc", "test/loss", "test/precision", "test/f1"} <= set(run.data.metrics)
    assert "checkpoints/best.ckpt" in _artifact_files(client, run.info.run_id)

    # One process, the same global batch (2 x per-process batch), the same seed and data.
    single = run_experiment(
        parse(name, [*overrides, "--data.batch_size", str(2 * batch), "--trainer.devices", "1"]),
        f"sqlite:///{tmp_path}/single/mlflow.db",
    )
    ddp = run.data.metrics
    n_test = int(run.data.tags["lineage.test_size"])
    assert abs(ddp["test/loss"] - single.test_metrics["test/loss"]) <= LOSS_TOLERANCE
    # At most one test image may flip between two models this close (none did, measured).
    assert abs(ddp["test/acc"] - single.test_metrics["test/acc"]) <= 1 / n_test + 1e-9
    single_metrics = MlflowClient(single.tracking_uri).get_run(single.run_id).data.metrics
    for key in ("val/loss", "train/loss"):
        assert abs(ddp[key] - single_metrics[key]) <= LOSS_TOLERANCE, key


# --- the server's pre-flight checks (fast: no server is started) -------------------------


def test_server_needs_a_database_backend(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert server.main([]) == 2
    assert "--backend-store-uri is required" in capsys.readouterr().err
    assert server.main(["--backend-store-uri", "http://127.0.0.1:5000"]) == 2
    assert "is not a database" in capsys.readouterr().err
    # Refused before anything exists: not even the default artifacts folder (./mlartifacts).
    assert list(tmp_path.iterdir()) == []


@RunIf(postgres_driver=True)
def test_server_reports_unreachable_postgresql_without_its_password(tmp_path, capsys):
    port = free_port(PG_PORTS)  # nothing listens there
    uri = f"postgresql://team:s3cret-pw@127.0.0.1:{port}/mlflow"
    code = server.main(
        [
            "--backend-store-uri",
            uri,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--port",
            str(free_port(MLFLOW_PORTS)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Connection refused" in err and "is PostgreSQL running?" in err
    assert "s3cret-pw" not in err and "team:***@" in err


def test_server_reports_a_port_in_use(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port(MLFLOW_PORTS)))
        busy.listen()
        port = busy.getsockname()[1]
        code = server.main(
            [
                "--backend-store-uri",
                f"sqlite:///{tmp_path}/mlflow.db",
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--port",
                str(port),
            ]
        )
    assert code == 2
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.slow
@NEEDS_POSTGRESQL
def test_four_workers_count_twelve_trials_once_on_postgresql(
    mlflow_server, postgres, fashion_dir, tmp_path
):
    """The load test of tests/test_servers.py on a PostgreSQL study, runs through the
    PostgreSQL-backed `mlflow server`."""
    from tests.test_servers import run_load

    postgres.create_database("optuna_load")
    run_load(tmp_path, fashion_dir, mlflow_server.url, postgres.url("optuna_load"))
