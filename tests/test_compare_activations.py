"""compare-activations: one tracked run per (activation, seed) plus a summary run, on tiny data."""

from __future__ import annotations

import csv
import io
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments.reports.compare_activations import main as compare
from tests.helpers import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The summary table (without run ids) of relu,swish x 2 seeds on the tiny data, saved from
#: compare-activations before it became a study: the port must reproduce it (to float32's
#: last digits, which depend on the CPU's kernels).
SAVED_SUMMARY = Path(__file__).parent / "fixtures" / "activation_summary_tiny.csv"


@pytest.fixture
def store(migrated_store):
    """Every test here starts from an already migrated store (see conftest)."""
    return migrated_store


def _tiny(fashion_dir) -> list[str]:
    # 20 iterations, validation every 10; a 16-unit hidden layer keeps the per-run
    # first-layer-weights figure small.
    return [
        "--trainer.max_steps",
        "20",
        "--trainer.val_check_interval",
        "10",
        "--data.data_dir",
        str(fashion_dir),
        "--data.val_size",
        "100",
        "--data.download",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--model.hidden_size",
        "16",
        "--threads",  # pinned: the summary table below is compared with a saved one exactly
        "1",
    ]


def _all_runs(client: MlflowClient):
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000) if ids else []


def _final(client: MlflowClient, run_id: str, key: str) -> float:
    history = client.get_metric_history(run_id, key)
    return max(history, key=lambda m: (m.step, m.timestamp)).value


def test_two_activations_two_seeds_then_a_summary(store, fashion_dir, capsys):
    args = ["--activations", "relu,swish", "--seeds", "2", "--tracking-uri", store]
    labelled = ["--run-name", "act-demo", "--tag", "owner=ana"]
    assert compare([*args, *labelled, *_tiny(fashion_dir)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    # A grid study: each pair once, in order, and no Lightning INFO lines on any run.
    trials = re.findall(r"trial +(\d+) COMPLETE .*\[model.activation=(\w+), seed=(\d)\]", out)
    assert trials == [
        ("0", "relu", "0"),
        ("1", "relu", "1"),
        ("2", "swish", "0"),
        ("3", "swish", "1"),
    ]
    for noise in ("GPU available", "litlogger", "Restoring states", "INFO"):
        assert noise not in out + captured.err, noise

    client = MlflowClient(store)
    runs = _all_runs(client)
    summaries = [r for r in runs if r.data.tags.get("kind") == "activation-summary"]
    parents = [r for r in runs if r.data.tags.get("study_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("study_role") == "trial"]
    assert len(runs) == 6 and len(summaries) == 1 and len(parents) == 1 and len(children) == 4
    summary = summaries[0]
    group_id = summary.data.tags["group_id"]
    assert summary.info.status == "FINISHED" and summary.data.tags["task"] == "S4"
    assert parents[0].info.status == "FINISHED" and parents[0].info.run_name == group_id
    # --run-name names the summary run; --tag lands on it and on every run of the group.
    assert summary.info.run_name == "act-demo"
    assert [r.data.tags.get("owner") for r in runs] == ["ana"] * 6
    assert {(r.data.params["model.activation"], r.data.tags["seed"]) for r in children} == {
        ("relu", "0"),
        ("relu", "1"),
        ("swish", "0"),
        ("swish", "1"),
    }
    for run in children:
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["study"] == "compare-activations" and tags["group_id"] == group_id
        assert tags["study_name"] == group_id
        assert tags["activation"] == run.data.params["model.activation"]
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["experiment"] == "s4-mlp" and tags["task"] == "S4"
        assert run.data.params["trainer.max_steps"] == "20"
        # Each run's own figures (the W1 tiles among them) are part of the answer.
        assert client.list_artifacts(run.info.run_id, "figures"), run.info.run_name

    # The summary table against the child runs' own metric histories.
    summary_id = summary.info.run_id
    table = client.download_artifacts(summary_id, "activation_summary.csv")
    rows = {row["activation"]: row for row in csv.DictReader(io.StringIO(Path(table).read_text()))}
    assert list(rows) == ["relu", "swish"]
    saved = list(csv.DictReader(io.StringIO(SAVED_SUMMARY.read_text())))
    for row, old in zip(rows.values(), saved, strict=True):
        assert (row["activation"], row["runs"]) == (old["activation"], old["runs"])
        for key in old.keys() - {"activation", "runs"}:
            # float32 sums differ in their last digits between CPUs (Xeon, EPYC: 6e-8)
            assert float(row[key]) == pytest.approx(float(old[key]), rel=1e-4, abs=1e-9), key
    for name, row in rows.items():
        mine = [r for r in children if r.data.params["model.activation"] == name]
        losses = [_final(client, r.info.run_id, "train/loss") for r in mine]
        accs = [_final(client, r.info.run_id, "val/acc") for r in mine]
        assert int(row["runs"]) == 2
        assert float(row["final_train_loss_mean"]) == pytest.approx(statistics.fmean(losses))
        assert float(row["final_train_loss_std"]) == pytest.approx(statistics.stdev(losses))
        assert float(row["final_val_acc_mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(row["final_val_acc_std"]) == pytest.approx(statistics.stdev(accs), abs=1e-12)
        assert set(row["run_ids"].split()) == {r.info.run_id for r in mine}
        # The same numbers in the printed table and in the summary run's metrics.
        mean, std = statistics.fmean(losses), statistics.stdev(losses)
        assert f"| {name} | 2 | {mean:.4f} ± {std:.4f} |" in out
        assert summary.data.metrics[f"{name}/final_val_acc_mean"] == pytest.approx(
            statistics.fmean(accs)
        )
    markdown = Path(client.download_artifacts(summary_id, "activation_summary.md")).read_text()
    assert "| relu | 2 |" in markdown and "1.49 / 0.470" in markdown

    for name in ("activation_loss.png", "activation_val_acc.png", "activation_bars.png"):
        data = Path(client.download_artifacts(summary_id, f"figures/{name}")).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000, name

    # Completing the same group again resumes its study: no trial runs, only a new summary.
    assert compare([*args, "--group-id", group_id, *_tiny(fashion_dir)]) == 0
    assert "COMPLETE" not in capsys.readouterr().out
    runs = _all_runs(client)
    assert len(runs) == 7
    assert sum(r.data.tags.get("kind") == "activation-summary" for r in runs) == 2


def test_unknown_activation_fails_before_any_run(store, fashion_dir, capsys):
    argv = ["--activations", "relu,nope", "--seeds", "1", "--tracking-uri", store]
    assert compare([*argv, *_tiny(fashion_dir)]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "valid: relu, leaky_relu, elu, selu, swish, sigmoid, tanh" in err
    assert _all_runs(MlflowClient(store)) == []


def test_owned_flags_and_bad_overrides_fail_before_any_run(store, fashion_dir, capsys):
    base = ["--seeds", "1", "--tracking-uri", store, *_tiny(fashion_dir)]
    assert compare([*base, "--model.activation", "tanh"]) == 2
    assert "use --activations" in capsys.readouterr().err
    assert compare([*base, "--model.lr", "-1"]) == 2
    assert "model.lr" in capsys.readouterr().err
    assert _all_runs(MlflowClient(store)) == []


@pytest.mark.slow
def test_interrupted_comparison_keeps_finished_runs_and_completes_later(store, fashion_dir):
    # A real process, stopped with Ctrl-C (SIGINT) once its second run has started.
    argv = ["--activations", "relu", "--seeds", "2", "--tracking-uri", store, *_tiny(fashion_dir)]
    log = Path(store.removeprefix("sqlite:///")).parent / "compare.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "experiments", "compare-activations", *argv],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            # A background child of a non-interactive shell inherits SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 300
        while "trial   0 COMPLETE" not in log.read_text():  # the second run starts at once
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130, log.read_text()
    text = log.read_text()
    group_id = re.search(r"--group-id (\S+)", text).group(1)

    client = MlflowClient(store)
    runs = _all_runs(client)
    trials = [r for r in runs if r.data.tags.get("study_role") == "trial"]
    assert [r.data.tags["seed"] for r in trials if r.info.status == "FINISHED"] == ["0"]
    statuses = [
        (r.data.tags.get("seed"), r.info.status, r.data.tags.get("end_reason")) for r in runs
    ]
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs), (statuses, text[-3000:])
    assert not any(r.data.tags.get("kind") == "activation-summary" for r in runs)

    # Completing the group trains only seed 1 again, then writes the summary of both.
    assert compare([*argv, "--group-id", group_id]) == 0
    runs = _all_runs(client)
    trials = [r for r in runs if r.data.tags.get("study_role") == "trial"]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["seed"] for r in finished) == ["0", "1"]
    summary = next(r for r in runs if r.data.tags.get("kind") == "activation-summary")
    table = client.download_artifacts(summary.info.run_id, "activation_summary.csv")
    row = next(csv.DictReader(io.StringIO(Path(table).read_text())))
    assert set(row["run_ids"].split()) == {r.info.run_id for r in finished}


def test_a_single_seed_shows_no_spread(tmp_path):
    # One seed: the mean, and "-" / a blank / no band where the std would be.
    from experiments.reports.compare_activations import (
        ChildRun,
        plot_bars,
        plot_curves,
        summarize,
        summary_csv,
        summary_markdown,
    )

    one = ChildRun(
        "relu", 0, "r0", 1.25, 0.5, 0.49, [(10, 1.5), (20, 1.25)], [(10, 0.4), (20, 0.5)]
    )
    two = [
        ChildRun("swish", seed, f"s{seed}", loss, acc, acc, [(10, loss)], [(10, acc)])
        for seed, loss, acc in ((0, 1.0, 0.6), (1, 1.2, 0.8))
    ]
    rows = summarize([one, *two], ["relu", "swish"])
    assert (rows[0].loss_mean, rows[0].loss_std, rows[0].acc_std) == (1.25, None, None)
    assert rows[1].acc_std == pytest.approx(statistics.stdev([0.6, 0.8]))

    markdown = summary_markdown(rows, 1)
    assert "| relu | 1 | 1.2500 ± - | 0.5000 ± - | 1.49 / 0.470 |" in markdown
    assert f"| swish | 2 | 1.1000 ± {statistics.stdev([1.0, 1.2]):.4f} |" in markdown
    table = {row["activation"]: row for row in csv.DictReader(io.StringIO(summary_csv(rows)))}
    assert table["relu"]["final_train_loss_std"] == "" and table["relu"]["final_val_acc_std"] == ""
    assert float(table["swish"]["final_val_acc_std"]) == pytest.approx(0.1414, abs=1e-4)

    plot_curves([one, *two], ["relu", "swish"], "loss_curve", "loss", "t", tmp_path / "c.png")
    plot_bars(rows, tmp_path / "b.png")
    for name in ("c.png", "b.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
