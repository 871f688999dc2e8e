"""The accuracy benchmark's command on tiny data: its table, its tracked runs, its seed settings.

    python -m pytest tests/test_bench_accuracy.py

The full-length benchmark on the real data is `python -m experiments bench accuracy`
(minutes to hours); here `--quick` only proves that the command works end to end.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments.__main__ import main as cli
from experiments.bench.accuracy import SEED_SETTINGS_DIR, TASKS
from experiments.seed_tasks import S2_REPORTED_ACC, S2_REPORTED_CLASS_ACC, SEED_TASKS
from experiments.training.config import catalog, parse

# | task | experiment | seed bar | target | test acc | vs target | epochs | wall min |
ROW = re.compile(
    r"^\| (S[\d.]+) \| ([\w-]+) \| ([\d.]+) \| [^|]+ "
    r"\| ([\d.]+) \| ([^|]+) \| (\d+) \| ([\d.]+) \|$"
)


def _rows(out: str) -> dict[str, re.Match]:
    return {m.group(1): m for line in out.splitlines() if (m := ROW.match(line))}


def test_quick_benchmark_prints_a_row_per_task_and_logs_runs(migrated_store, fashion_dir, capsys):
    store = migrated_store
    code = cli(
        ["bench", "accuracy", "--quick", "--data-dir", str(fashion_dir), "--tracking-uri", store]
    )
    out = capsys.readouterr().out
    assert code == 0, out

    rows = _rows(out)
    assert sorted(rows) == sorted(TASKS)
    for task, row in rows.items():
        assert row.group(2) == TASKS[task].experiment
        seed = SEED_TASKS[task]  # the seed's bar; for S2 the accuracy it reported
        assert float(row.group(3)) == (
            seed.acc_bar if seed.acc_bar is not None else S2_REPORTED_ACC
        )
        assert 0.0 <= float(row.group(4)) <= 1.0
        assert row.group(5).strip() == "n/a (quick)"
        assert int(row.group(6)) == 1
        assert float(row.group(7)) >= 0.0
    assert re.search(r"^Hardware: .+, \d+ cores", out, re.M)
    assert re.search(r"^Versions: torch \S+, lightning \S+", out, re.M)

    # S2's per-class table: every class, the seed's number beside a measured one.
    for name, seed in [*S2_REPORTED_CLASS_ACC.items(), ("overall", S2_REPORTED_ACC)]:
        assert re.search(
            rf"^\| {re.escape(name)} \| {100 * seed:.0f} \| \d+\.\d \| [+-]\d+\.\d \|$",
            out,
            re.M,
        )

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("fashion-mnist")
    runs = client.search_runs([experiment.experiment_id], "tags.bench = 'accuracy'")
    assert sorted(r.data.tags["task"] for r in runs) == sorted(TASKS)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["bench.quick"] == "1"
        assert run.info.run_id in out
        task = run.data.tags["task"]
        assert run.data.metrics["test/acc"] == pytest.approx(float(rows[task].group(4)), abs=1e-4)
    s2 = next(r for r in runs if r.data.tags["task"] == "S2")
    assert {f"test/class_acc/{name}" for name in S2_REPORTED_CLASS_ACC} <= set(s2.data.metrics)


def test_unknown_task_is_refused_before_any_run(no_store, capsys):
    store = no_store
    assert cli(["bench", "accuracy", "--tasks", "S1.2,S9", "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert "S9" in err and "S1.1" in err
    assert not Path(store.removeprefix("sqlite:///")).exists()


def test_bench_bars_are_the_seed_tasks_facts():
    # The seed's own pass marks (experiments/SEED_TASKS.md), read from experiments.seed_tasks.
    assert {task: spec.bar for task, spec in TASKS.items()} == {
        "S1.1": SEED_TASKS["S1.1"].acc_bar,
        "S1.2": SEED_TASKS["S1.2"].acc_bar,
        "S1.3": SEED_TASKS["S1.3"].acc_bar,
        "S2": S2_REPORTED_ACC,
    }
    for spec in TASKS.values():
        assert spec.target > spec.bar  # our defaults aim above the seed's mark


def test_benchmark_tasks_are_catalog_experiments():
    names = {entry.name: entry.task for entry in catalog()}
    for task, spec in TASKS.items():
        assert names[spec.experiment] == task


@pytest.mark.parametrize("spec", TASKS.values(), ids=list(TASKS))
def test_seed_settings_parse_and_keep_the_seed_task(spec):
    path = SEED_SETTINGS_DIR / spec.seed_settings
    seed = parse(str(path), [])
    ours = parse(spec.experiment, [])
    assert seed.task == ours.task == spec.task
    assert seed.model_class_path == ours.model_class_path
    # Not catalog entries: the catalog only lists experiments/*.yaml.
    assert path.stem not in {entry.name for entry in catalog()}


def test_seed_settings_hold_what_the_seed_fixed():
    s11 = parse(str(SEED_SETTINGS_DIR / TASKS["S1.1"].seed_settings), [])
    assert [s11.get(f"model.{k}") for k in ("activation", "init", "init_std")] == [
        "relu",
        "normal",
        0.01,
    ]
    assert s11.get("model.loss_scale") == "per_class"  # cross-entropy / number of classes
    s12 = parse(str(SEED_SETTINGS_DIR / TASKS["S1.2"].seed_settings), [])
    assert s12.get("model.optimizer") == "sgd"
    assert len(s12.get("model.net.hidden_sizes")) == 1
    assert s12.get("model.net.activation") == "relu"
    for source in (TASKS["S1.3"].experiment, str(SEED_SETTINGS_DIR / TASKS["S1.3"].seed_settings)):
        s13 = parse(source, [])
        assert s13.get("model.net.channels") == [32, 64, 128, 256]
        assert s13.get("model.net.dropout") == 0.3
        assert s13.get("model.net.hidden") == 128
        assert s13.trainer["max_epochs"] == 10
    s2 = parse(str(SEED_SETTINGS_DIR / TASKS["S2"].seed_settings), [])
    assert [s2.get(f"model.net.{k}") for k in ("kernel_size", "stride", "padding")] == [2, 2, 0]
    assert (s2.get("model.net.batch_norm"), s2.get("model.net.dropout")) == (False, 0.1)
