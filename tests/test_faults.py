"""Faults: nothing finished is lost and the MLflow store never lies about a run.

    python -m pytest tests/test_faults.py              # in-process faults, real stores
    python -m pytest tests/test_faults.py -m slow      # real signals to real processes

Everything is real: SQLite MLflow stores in temporary folders, Lightning training on tiny
Fashion-MNIST files, `python -m experiments ...` processes killed with SIGKILL, SIGTERM
and SIGINT, a kernel-enforced file-size limit and (when the machine allows mounting) a
full tmpfs. Faults are injected only from outside the code under test: a signal, a
callback that poisons the weights the way a diverging update does, a truncated file.
"""

from __future__ import annotations

import io
import itertools
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from mlflow import MlflowClient

from experiments import errors
from experiments.__main__ import main as cli
from experiments.tracking import health
from experiments.tracking import store as tracking_store
from experiments.training import checkpoints
from experiments.training.config import parse
from experiments.training.outputs import RunOutputs
from experiments.training.runner import run_experiment
from tests.helpers import (
    REPO,
    child_env,
    data_overrides,
    run_cli,
    start_cli,
    stop_group,
    tiny,
    write_space,
)

EXPERIMENT = "fashion-mnist"


def runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def only_run(uri: str):
    found = runs(uri)
    assert len(found) == 1, [r.info.run_id for r in found]
    return found[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- diverging training ----------------------------------------------------------------


def test_diverging_lr_fails_the_run_in_the_first_epoch_without_checkpoints(
    store, fashion_dir, capsys
):
    code = cli(
        ["run", "s1-mlp", *tiny(fashion_dir, 3), "--model.lr", "1e4", "--tracking-uri", store]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "training loss is nan at epoch 0" in err or "training loss is inf at epoch 0" in err
    assert "model.lr=10000.0" in err

    run = only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "non_finite_loss"
    assert "NonFiniteLossError" in run.data.tags["error"]
    # Stopped inside epoch 0: no validation happened, no checkpoint of NaN weights exists.
    assert "val/acc" not in run.data.metrics
    assert list(tracking_store.checkpoint_dir(store, run.info.run_id).glob("*.ckpt")) == []


class PoisonWeights(Callback):
    """Does what a diverging optimizer step does: turns a weight into NaN, in epoch 1.

    `at_last_batch` poisons after the last batch of the epoch, so no further training loss
    reveals it: only the weight check before validation's checkpoint can.
    """

    def __init__(self, at_last_batch: bool) -> None:
        self.at_last_batch = at_last_batch
        self.snapshot: dict[str, bytes] | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = batch_idx == trainer.num_training_batches - 1
        target = last if self.at_last_batch else batch_idx == 1
        if trainer.current_epoch != 1 or not target or self.snapshot is not None:
            return
        folder = Path(trainer.checkpoint_callback.dirpath)
        self.snapshot = {p.name: p.read_bytes() for p in folder.glob("*.ckpt")}
        with torch.no_grad():
            next(pl_module.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("at_last_batch", [False, True], ids=["mid-epoch", "last-batch"])
def test_nan_weights_never_replace_a_good_checkpoint(store, fashion_dir, at_last_batch):
    poison = PoisonWeights(at_last_batch)
    cfg = parse("s1-mlp", tiny(fashion_dir, 3))
    with pytest.raises(errors.NonFiniteLossError, match="epoch 1"):
        run_experiment(cfg, store, callbacks=[poison], verbose=False)

    run = only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "non_finite_loss"
    folder = tracking_store.checkpoint_dir(store, run.info.run_id)
    assert set(poison.snapshot) == {"best.ckpt", "last.ckpt"}
    for name, content in poison.snapshot.items():
        assert (folder / name).read_bytes() == content, f"{name} was overwritten"
        state = checkpoints.read_checkpoint(folder / name)
        assert state["epoch"] == 0
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


# --- orphaned runs ---------------------------------------------------------------------


def test_run_left_running_by_a_dead_process_is_marked_when_the_store_is_next_used(
    store, fashion_dir
):
    client = tracking_store.client(store)
    experiment_id = tracking_store.ensure_experiment(client, store, EXPERIMENT)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a real process that has exited (and been reaped)
    orphan = client.create_run(
        experiment_id, tags={**health.process_tags(), health.PID_TAG: str(dead.pid)}
    ).info.run_id
    alive = client.create_run(experiment_id, tags=health.process_tags()).info.run_id
    elsewhere = client.create_run(
        experiment_id, tags={**health.process_tags(), health.HOST_TAG: "another-host"}
    ).info.run_id
    untagged = client.create_run(experiment_id).info.run_id

    run_experiment(parse("s1-mlp", tiny(fashion_dir)), store, verbose=False)

    marked = client.get_run(orphan)
    assert marked.info.status == "FAILED"
    assert marked.data.tags["failure_reason"] == "orphaned"
    assert f"process {dead.pid}" in marked.data.tags["end_reason"]
    # A live owner, another host and an unknown owner cannot be judged dead: left alone.
    for run_id in (alive, elsewhere, untagged):
        assert client.get_run(run_id).info.status == "RUNNING"


# --- store and storage -----------------------------------------------------------------


def test_unreachable_tracking_server_fails_before_training(fashion_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{closed_port()}"
    cfg = parse("s1-mlp", tiny(fashion_dir))
    started = time.monotonic()
    with pytest.raises(errors.StoreError, match="unreachable") as raised:
        run_experiment(cfg, uri, verbose=False)
    # MLflow's own retries would take minutes; the pre-flight check answers at once.
    assert time.monotonic() - started < 60
    assert uri in str(raised.value)
    assert not (tmp_path / "mlruns").exists()


def test_unwritable_store_folder_is_refused_before_anything_runs(
    no_store, fashion_dir, tmp_path, capsys
):
    store = no_store
    # A file where the checkpoint folder should be: unwritable even for root.
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "checkpoints").write_text("not a folder")
    assert cli(["run", "s1-mlp", *tiny(fashion_dir), "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/mlruns/checkpoints is not a directory" in err
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one(tmp_path):
    io = checkpoints.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(4)}, "epoch": 0}, path)
    good = path.read_bytes()
    big = {"state_dict": {"w": torch.zeros(1_000_000)}, "epoch": 1}  # 4 MB

    # The kernel refuses to grow any file past 256 kB (RLIMIT_FSIZE; Python ignores
    # SIGXFSZ, so write() fails with EFBIG) -- a disk filling up mid-write, unprivileged.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        with pytest.raises(errors.CheckpointWriteError) as raised:
            io.save_checkpoint(big, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(raised.value)
    assert str(path) in message and "File too large" in message
    assert "previous checkpoint" in message and "is intact" in message
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left

    # A file in place of the folder (what a broken mount or a stray file looks like).
    (tmp_path / "blocked").write_text("")
    with pytest.raises(errors.CheckpointWriteError, match=r"blocked/last\.ckpt"):
        io.save_checkpoint(big, tmp_path / "blocked" / "last.ckpt")


# --- interrupt, resume, corrupt checkpoints -------------------------------------------


class InterruptAtEpoch(Callback):
    """Raises KeyboardInterrupt at the start of an epoch, as a Ctrl-C there would; with
    `after`, not before `after()` is true (polled for up to `wait_s` seconds, then the
    interrupt comes anyway and the test's own assertion says what was missing)."""

    def __init__(self, epoch: int, after=None, wait_s: float = 60) -> None:
        self.epoch, self.after, self.wait_s = epoch, after, wait_s

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            deadline = time.monotonic() + self.wait_s
            while self.after is not None and not self.after() and time.monotonic() < deadline:
                time.sleep(0.1)
            raise KeyboardInterrupt


@pytest.fixture
def killed_run(store, fashion_dir):
    """A run interrupted at the start of epoch 2 of 4: KILLED, last.ckpt from epoch 1, and at
    least one system-metrics sample in the store (the interrupt waits for it, up to 60 s:
    on a loaded machine the sampler's first 0.2 s interval can outlast two tiny epochs)."""
    cfg = parse("s1-mlp", tiny(fashion_dir, 4))

    def sampled() -> bool:
        return any(system_steps(store, run.info.run_id) for run in runs(store))

    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            run_experiment(
                cfg,
                store,
                callbacks=[InterruptAtEpoch(2, after=sampled)],
                verbose=False,
                outputs=RunOutputs(system_metrics_s=0.2),
            )
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores SIGINT after a Ctrl-C
    run = only_run(store)
    assert run.info.status == "KILLED"
    return run.info.run_id


def assert_continuous_history(uri: str, run_id: str, epochs: int) -> None:
    """One val/acc point per epoch, on increasing steps, epochs 0..epochs-1 without a gap."""
    client = MlflowClient(uri)
    steps = sorted({m.step for m in client.get_metric_history(run_id, "val/acc")})
    assert len(steps) == epochs, steps
    epoch_at = {m.step: m.value for m in client.get_metric_history(run_id, "epoch")}
    assert [int(epoch_at[s]) for s in steps] == list(range(epochs))
    gaps = {b - a for a, b in itertools.pairwise(steps)}
    assert len(gaps) == 1, steps  # every epoch has the same number of steps


def system_steps(uri: str, run_id: str) -> list[int]:
    history = MlflowClient(uri).get_metric_history(run_id, "system/cpu_utilization_percentage")
    return [m.step for m in sorted(history, key=lambda m: m.timestamp)]


def test_interrupted_run_resumes_into_the_same_run(store, killed_run, capsys):
    folder = tracking_store.checkpoint_dir(store, killed_run)
    assert checkpoints.read_checkpoint(folder / "last.ckpt")["epoch"] == 1
    before = system_steps(store, killed_run)

    argv = ["run", "--resume", killed_run, "--tracking-uri", store]
    assert cli([*argv, "--system-metrics-interval", "0.2"]) == 0
    out = capsys.readouterr().out
    assert killed_run in out and "FINISHED" in out

    run = only_run(store)  # no second run was created
    assert run.info.status == "FINISHED"
    assert run.data.tags["resume_count"] == "1"
    assert "from KILLED" in run.data.tags["resume.1"] and "epoch 1" in run.data.tags["resume.1"]
    assert "end_reason" not in run.data.tags
    assert "test/acc" in run.data.metrics
    assert checkpoints.read_checkpoint(folder / "last.ckpt")["epoch"] == 3
    assert_continuous_history(store, killed_run, 4)
    # The system metrics go on after the interruption's steps, in order, none overwritten.
    after = system_steps(store, killed_run)
    assert before, "no system-metrics sample was logged before the interruption"
    assert len(after) > len(before) and after[: len(before)] == before
    assert after == sorted(set(after)), after

    # A finished run is not resumed again.
    assert cli(["run", "--resume", killed_run, "--tracking-uri", store]) == 2
    assert "FINISHED" in capsys.readouterr().err


def test_resume_on_changed_data_is_refused(store, tmp_path, capsys):
    from datamodules.synthetic import write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "data", n_train=300, n_test=50)
    overrides = data_overrides("s1-mlp", data, None)
    overrides[overrides.index("--data.val_size") + 1] = "50"
    overrides[overrides.index("--trainer.max_epochs") + 1] = "3"
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            run_experiment(parse("s1-mlp", overrides), store, callbacks=[InterruptAtEpoch(1)])
    finally:
        signal.signal(signal.SIGINT, previous)
    run_id = only_run(store).info.run_id

    write_fashion_mnist(tmp_path / "data", n_train=300, n_test=50, seed=1)  # other images
    assert cli(["run", "--resume", run_id, "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert "the data differs from what the run started with" in err
    assert "lineage.md5_train_images: was" in err
    assert only_run(store).info.status == "KILLED"


class Payload:
    """Unpickling this would create a file: the proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_corrupt_or_foreign_checkpoint_is_refused_naming_the_file(
    store, killed_run, tmp_path, capsys
):
    last = tracking_store.checkpoint_dir(store, killed_run) / "last.ckpt"
    content = last.read_bytes()
    last.write_bytes(content[: len(content) // 2])

    assert cli(["run", "--resume", killed_run, "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and "truncated or corrupt" in err
    # The same file given to evaluation (Trainer.test goes through the project's IO).
    with pytest.raises(errors.CheckpointError, match="truncated or corrupt"):
        checkpoints.AtomicCheckpointIO().load_checkpoint(last)

    # A complete checkpoint that also carries a pickled object: refused, never executed.
    marker = tmp_path / "code-was-executed"
    state = torch.load(io.BytesIO(content), weights_only=True)
    state["callbacks"] = {"evil": Payload(marker)}
    torch.save(state, last)  # plain torch.save pickles the object; loading must not run it
    assert cli(["run", "--resume", killed_run, "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and "not written by this project" in err
    assert not marker.exists()
    assert only_run(store).info.status == "KILLED"  # never reopened


# --- doctor ----------------------------------------------------------------------------


def test_doctor_reports_a_healthy_store_and_the_data(store, fashion_dir, capsys):
    client = tracking_store.client(store)
    tracking_store.ensure_experiment(client, store, EXPERIMENT)
    code = cli(["doctor", "--tracking-uri", store, "--data-dir", str(fashion_dir)])
    out = capsys.readouterr().out
    assert "ok    tracking store" in out and "ok    checkpoint folder" in out
    assert "ok    data Fashion-MNIST" in out and "FashionMNIST" in out
    assert "none left RUNNING" in out
    assert code == 0, out


def test_doctor_fails_on_an_unreachable_server(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{closed_port()}"
    assert cli(["doctor", "--tracking-uri", uri, "--skip-data"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  tracking store" in out and "unreachable" in out


# --- slow: real signals to real processes ----------------------------------------------

# Enough epochs that a run is still training a few seconds after its first checkpoint
# (each tiny epoch takes ~0.1 s): the tests signal it or fill its disk in that window, and
# with 4 epochs a fast run could finish first.
EPOCHS = 30


def start_run(tmp_path: Path, fashion_dir) -> subprocess.Popen:
    """`python -m experiments run s1-mlp` on tiny data, slow enough to be interrupted."""
    args = [*tiny(fashion_dir, EPOCHS), "--data.batch_size", "8"]
    # A fixed small model (about 0.4 MB per checkpoint), whatever the catalog's defaults:
    # the full-disk test sizes its tmpfs for it.
    args += ["--model.hidden_sizes", "[128]", "--model.momentum", "0"]
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", "run", "s1-mlp", *args],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_running_checkpoint(tmp_path: Path, proc: subprocess.Popen, timeout=600) -> str:
    """Poll until a last.ckpt exists and the store shows its run RUNNING; the run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((tmp_path / "mlruns" / "checkpoints").glob("*/last.ckpt"))
        if found:
            run_id = found[0].parent.name
            status = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").get_run(run_id)
            assert status.info.status == "RUNNING"
            return run_id
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"run ended ({proc.returncode}) before its first checkpoint:\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no checkpoint within the timeout")


@pytest.mark.slow
def test_sigkill_then_doctor_marks_the_orphan_and_resume_finishes_it(tmp_path, fashion_dir):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    proc = start_run(tmp_path, fashion_dir)
    run_id = wait_for_running_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL

    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # the lie a SIGKILL leaves

    doctor = run_cli("doctor", "--skip-data", cwd=tmp_path, env=child_env())
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"orphaned run           {run_id}" in doctor.stdout
    assert f"python -m experiments run --resume {run_id}" in doctor.stdout
    marked = client.get_run(run_id)
    assert marked.info.status == "FAILED"
    assert marked.data.tags["failure_reason"] == "orphaned"

    resumed = run_cli("run", "--resume", run_id, cwd=tmp_path, env=child_env())
    assert resumed.returncode == 0, resumed.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "from FAILED (orphaned)" in run.data.tags["resume.1"]
    assert_continuous_history(uri, run_id, EPOCHS)
    last = tracking_store.checkpoint_dir(uri, run_id) / "last.ckpt"
    assert checkpoints.read_checkpoint(last)["epoch"] == EPOCHS - 1
    assert len(runs(uri)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_marks_killed_and_says_how_to_resume(
    tmp_path, fashion_dir, signum
):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    proc = start_run(tmp_path, fashion_dir)
    run_id = wait_for_running_checkpoint(tmp_path, proc)
    last = tracking_store.checkpoint_dir(uri, run_id) / "last.ckpt"
    step_before = checkpoints.read_checkpoint(last)["global_step"]
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)

    assert proc.returncode == 128 + signum, err
    assert f"python -m experiments run --resume {run_id}" in err
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert signal.Signals(signum).name in run.data.tags["end_reason"]
    saved = checkpoints.read_checkpoint(last, for_training=True)  # complete and loadable
    assert saved["global_step"] >= step_before

    if signum == signal.SIGTERM:  # resuming from the interrupt checkpoint finishes the run
        resumed = run_cli("run", "--resume", run_id, cwd=tmp_path, env=child_env())
        assert resumed.returncode == 0, resumed.stderr
        assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
        assert_continuous_history(uri, run_id, EPOCHS)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 6 MB tmpfs mounted as the store's checkpoint folder (root with CAP_SYS_ADMIN)."""
    folder = tmp_path / "mlruns" / "checkpoints"
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write zeros into `folder` until the filesystem is full."""
    chunk = b"\0" * 65536
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC


@pytest.mark.slow
def test_full_disk_at_checkpoint_time_fails_clearly_and_keeps_the_last_good(
    tmp_path, fashion_dir, small_tmpfs
):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    proc = start_run(tmp_path, fashion_dir)
    try:
        run_id = wait_for_running_checkpoint(tmp_path, proc)
        fill(small_tmpfs)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    folder = tracking_store.checkpoint_dir(uri, run_id)
    assert "No space left on device" in err and str(folder) in err
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "checkpoint_write"
    state = checkpoints.read_checkpoint(folder / "last.ckpt", for_training=True)
    assert state["epoch"] < EPOCHS - 1
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_unreachable_tracking_server_cli_exits_at_once(tmp_path, fashion_dir):
    uri = f"http://127.0.0.1:{closed_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "run", "s1-mlp", *tiny(fashion_dir)],
        cwd=tmp_path,
        env=child_env(MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert f"tracking server {uri} is unreachable" in proc.stderr
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns").exists()


# --- slow: studies ---------------------------------------------------------------------


@pytest.mark.slow
def test_diverging_trial_fails_and_the_study_goes_on(tmp_path, fashion_dir):
    space = write_space(
        tmp_path / "diverge.yaml",
        {"lr": {"type": "categorical", "choices": [10000.0, 0.05], "target": "model.lr"}},
    )
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    done = run_cli(
        "search",
        str(space),
        "--trials",
        "2",
        "--pruner",
        "none",
        "--study-name",
        "diverge",
        "--sampler-seed",
        "0",
        *tiny(fashion_dir),
        cwd=tmp_path,
        env=child_env(),
    )
    trials = [r for r in runs(uri) if r.data.tags.get("study_role") == "trial"]
    diverged = [r for r in trials if r.data.params.get("model.lr") == "10000.0"]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    # With --sampler-seed 0 the random start-up trials pick 1e4 first (Optuna 5).
    assert diverged, "the sampler never picked the diverging lr: try another --sampler-seed"
    assert done.returncode == 0, done.stderr
    for run in diverged:
        assert run.info.status == "FAILED"
        assert run.data.tags["failure_reason"] == "non_finite_loss"
    assert len(finished) == 2  # the study went on to its 2 complete trials


@pytest.mark.slow
def test_second_study_with_the_same_name_and_another_space_is_refused(tmp_path, fashion_dir):
    lr = {"type": "float", "low": 0.01, "high": 0.5, "log": True, "target": "model.lr"}
    space = write_space(tmp_path / "space.yaml", {"lr": lr})
    argv = ["search", str(space), "--trials", "1", "--study-name", "shared", *tiny(fashion_dir)]
    first = run_cli(*argv, cwd=tmp_path, env=child_env())
    assert first.returncode == 0, first.stderr
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    before = {r.info.run_id for r in runs(uri)}

    write_space(space, {"lr": {**lr, "low": 0.001}})
    second = run_cli(*argv, cwd=tmp_path, env=child_env())
    assert second.returncode == 2
    assert "low: was 0.01, now 0.001" in second.stderr
    assert {r.info.run_id for r in runs(uri)} == before  # nothing new was recorded


# --- security --------------------------------------------------------------------------

PROJECT_PACKAGES = ("experiments", "models", "datamodules")


def _calls(tree):
    import ast

    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _keyword_is_true(call, name: str) -> bool:
    import ast

    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def test_every_checkpoint_load_in_the_project_is_weights_only():
    """torch.load, Trainer.fit/test(ckpt_path=...) all say weights_only=True; no raw pickle."""
    import ast

    offenders = []
    for package in PROJECT_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for call in _calls(tree):
                func = call.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = getattr(getattr(func, "value", None), "id", "")
                where = f"{path.relative_to(REPO)}:{call.lineno}"
                if (
                    owner == "torch"
                    and name == "load"
                    and not _keyword_is_true(call, "weights_only")
                ):
                    offenders.append(f"{where} torch.load without weights_only=True")
                if any(k.arg == "ckpt_path" for k in call.keywords) and not _keyword_is_true(
                    call, "weights_only"
                ):
                    offenders.append(f"{where} {name}(ckpt_path=...) without weights_only=True")
                if owner == "pickle" and name in ("load", "loads"):
                    offenders.append(f"{where} pickle.{name} unpickles anything")
    assert offenders == []


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a LISTEN socket on `port` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


@pytest.mark.slow
def test_ui_binds_loopback_unless_told_otherwise_and_says_so(tmp_path):
    port = closed_port()
    proc = start_cli("ui", "--port", str(port), cwd=tmp_path)  # one group with its server
    try:
        banner = proc.stdout.readline()
        assert f"at http://127.0.0.1:{port} (bound to 127.0.0.1: loopback only)" in banner
        deadline = time.monotonic() + 300
        while not listening_addresses(port) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        # 0100007F is 127.0.0.1 in /proc/net/tcp's byte order; 00000000 would be 0.0.0.0.
        assert listening_addresses(port) == {"0100007F"}
    finally:
        stop_group(proc, timeout=60)
