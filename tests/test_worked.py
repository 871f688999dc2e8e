"""Worked examples S0.1 and S3: printed numbers, chain rule vs autograd, and the MLflow run.

The expected values are computed here independently of experiments.reports.worked: by hand for
S0.1 at the seed's defaults, and by central finite differences of the loss for both.
"""

from __future__ import annotations

import math
import re

import pytest
from mlflow import MlflowClient

from experiments.reports.worked import main as worked

NUMBER = r"-?\d+\.\d+"


@pytest.fixture
def store(migrated_store):
    """Every test here starts from an already migrated store (see conftest)."""
    return migrated_store


def _runs(store: str, task: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("worked-examples")
    assert experiment is not None
    return client, client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.task = '{task}'"
    )


def _printed_text(out: str) -> str:
    """The worked-example text, without the trailing lines about the MLflow run."""
    return out[: out.index("\nMLflow run ")].lstrip("\n")


# ---------------------------------------------------------------------------------- S3


def _s3_loss(params: dict[str, list], y_true: float) -> float:
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    x = [1.0, 1.0]
    w1, b1, w2, b2 = params["w1"], params["b1"], params["w2"], params["b2"]
    h = [sig(x[0] * w1[0][j] + x[1] * w1[1][j] + b1[j]) for j in range(3)]
    y = sig(sum(h[j] * w2[j][0] for j in range(3)) + b2[0])
    return 0.5 * (y_true - y) ** 2


def _s3_numeric_gradients(y_true: float) -> dict[str, float]:
    """Central differences of L, one parameter at a time, keyed like the printed rows."""
    base = {
        "w1": [[0.4, 0.6, 0.2], [0.3, 0.9, 0.5]],
        "b1": [1.0, 1.0, 1.0],
        "w2": [[0.2], [0.2], [0.8]],
        "b2": [0.5],
    }
    eps = 1e-6
    grads = {}
    for name, value in base.items():
        cells = (
            [(i, j) for i in range(len(value)) for j in range(len(value[0]))]
            if isinstance(value[0], list)
            else [(i, None) for i in range(len(value))]
        )
        for i, j in cells:
            moved = []
            for sign in (1, -1):
                params = {
                    k: [list(r) if isinstance(r, list) else r for r in v] for k, v in base.items()
                }
                if j is None:
                    params[name][i] += sign * eps
                else:
                    params[name][i][j] += sign * eps
                moved.append(_s3_loss(params, y_true))
            key = f"{name}[{i}]" if j is None else f"{name}[{i}][{j}]"
            grads[key] = (moved[0] - moved[1]) / (2 * eps)
    return grads


@pytest.mark.parametrize("y_true", [1.0, 0.0])
def test_s3_forward_and_gradients_agree(y_true, store, capsys):
    assert worked(["s3", "--y-true", str(y_true), "--tracking-uri", store]) == 0
    out = capsys.readouterr().out

    assert "output (rounded): 0.82" in out
    y_pred = float(re.search(rf"y_pred = sigmoid\(z2\) = ({NUMBER})", out).group(1))
    assert round(y_pred, 2) == 0.82
    assert f"y_true = {y_true:g} (our choice" in out

    rows = re.findall(rf"^\s+dL/d(\S+)\s+({NUMBER})\s+({NUMBER})\s+\S+\s+agree$", out, re.M)
    expected = _s3_numeric_gradients(y_true)
    # w2 (3), b2 (1), w1 (6), b1 (3): the four gradients, every entry once.
    assert [name for name, _, _ in rows] == [
        *("w2[0][0]", "w2[1][0]", "w2[2][0]", "b2[0]"),
        *(f"w1[{i}][{j}]" for i in range(2) for j in range(3)),
        *("b1[0]", "b1[1]", "b1[2]"),
    ]
    for name, chain, auto in rows:
        assert float(chain) == pytest.approx(float(auto), abs=1e-9), name
        assert float(chain) == pytest.approx(expected[name], abs=1e-8), name
    assert "agree on all 4 gradients" in out

    client, runs = _runs(store, "S3")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["kind"] == "worked"
    assert run.data.params["y_true"] == repr(y_true)
    assert run.data.metrics["y_pred"] == pytest.approx(y_pred, abs=1e-6)
    artifact = client.download_artifacts(run.info.run_id, "worked_s3.txt")
    with open(artifact) as fh:
        assert fh.read() == _printed_text(out)


# -------------------------------------------------------------------------------- S0.1

PARAMS = ("W1[1]", "W1[2]", "b[1]", "W2[1]", "b[2]")


def _s01_tables(out: str) -> list[dict[str, tuple[float, float, float, float]]]:
    """One {parameter: (grad chain, grad autograd, value chain, value autograd)} per example."""
    tables = []
    for block in re.split(r"the 5 parameters after example \d+", out)[1:]:
        rows = re.findall(
            rf"^\s+(\S+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+\S+\s+agree$",
            block,
            re.M,
        )
        tables.append({r[0]: tuple(float(v) for v in r[1:]) for r in rows[:5]})
    return tables


def _s01_loss(p: dict[str, float], x: tuple[float, float], y: float) -> float:
    h = max(0.0, p["W1[1]"] * x[0] + p["W1[2]"] * x[1] + p["b[1]"])
    return (y - max(0.0, p["W2[1]"] * h + p["b[2]"])) ** 2


def test_s01_two_ways_agree_and_match_the_hand_calculation(store, capsys):
    assert worked(["s0.1", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    for equation in (
        "h     = relu(z1)              = relu(W1[1] x1 + W1[2] x2 + b[1])",
        "y_hat = relu(z2)              = relu(W2[1] h + b[2])",
        "L     = (y - y_hat)^2",
        "dL/dW1[1] = dL/dy_hat * relu'(z2) * W2[1] * relu'(z1) * x1",
    ):
        assert equation in out

    tables = _s01_tables(out)
    assert len(tables) == 2 and all(list(t) == list(PARAMS) for t in tables)
    # By hand, lr 0.01 from W = 1, b = 0. Example 1, (2,2)->20: h = 4, y_hat = 4,
    # dL/dy_hat = -32, so dW1 = -64, db1 = -32, dW2 = -32 * 4 = -128, db2 = -32.
    # Example 2, (3,4)->28: h = 11.8, y_hat = 27.224, dL/dy_hat = -1.552.
    by_hand = [
        {"W1[1]": 1.64, "W1[2]": 1.64, "b[1]": 0.32, "W2[1]": 2.28, "b[2]": 0.32},
        {
            "W1[1]": 1.64 + 0.01 * 1.552 * 2.28 * 3,
            "W1[2]": 1.64 + 0.01 * 1.552 * 2.28 * 4,
            "b[1]": 0.32 + 0.01 * 1.552 * 2.28,
            "W2[1]": 2.28 + 0.01 * 1.552 * 11.8,
            "b[2]": 0.32 + 0.01 * 1.552,
        },
    ]
    data = (((2.0, 2.0), 20.0), ((3.0, 4.0), 28.0))
    before = dict.fromkeys(PARAMS, 1.0) | {"b[1]": 0.0, "b[2]": 0.0}
    for table, expected, (x, y) in zip(tables, by_hand, data, strict=True):
        for name in PARAMS:
            g_chain, g_auto, v_chain, v_auto = table[name]
            assert g_chain == pytest.approx(g_auto, abs=1e-9), name
            assert v_chain == pytest.approx(v_auto, abs=1e-9), name
            assert v_chain == pytest.approx(expected[name], abs=1e-8), name
            # And the gradient is the slope of the loss (no kink here: all z > 0).
            eps = 1e-6
            up, down = dict(before), dict(before)
            up[name] += eps
            down[name] -= eps
            slope = (_s01_loss(up, x, y) - _s01_loss(down, x, y)) / (2 * eps)
            assert g_chain == pytest.approx(slope, abs=1e-5), name
        before = {name: table[name][2] for name in PARAMS}
    assert "NOTE" not in out  # no unit at or below zero with the seed's values

    client, runs = _runs(store, "S0.1")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["kind"] == "worked"
    assert run.data.params["lr"] == "0.01" and run.data.params["init.W1_1"] == "1.0"
    assert run.data.metrics["final/W2_1"] == pytest.approx(by_hand[1]["W2[1]"], abs=1e-9)
    artifact = client.download_artifacts(run.info.run_id, "worked_s0.1.txt")
    with open(artifact) as fh:
        assert fh.read() == _printed_text(out)


def test_s01_relu_at_zero_is_explained_and_both_ways_still_agree(store, capsys):
    # b[1] = -4 puts the hidden pre-activation at exactly 0 on (2, 2): relu'(0) decides.
    assert worked(["s0.1", "--b1", "-4", "--lr", "0.005", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert "learning rate lr = 0.005" in out
    assert "the hidden ReLU has z = 0 <= 0" in out and "relu'(0) is undefined" in out
    first, second = _s01_tables(out)
    for name in PARAMS:
        g_chain, g_auto, v_chain, v_auto = first[name]
        assert g_chain == g_auto == 0.0
        assert v_chain == v_auto  # nothing moved on example 1
    assert first["b[1]"][2] == -4.0
    # Example 2: h = 3 - ... alive again: z1 = 3 + 4 - 4 = 3, y_hat = 3, dL/dy_hat = -50.
    assert second["W2[1]"][0] == pytest.approx(-150.0)
    assert second["W2[1]"][2] == pytest.approx(1 + 0.005 * 150)
    _, runs = _runs(store, "S0.1")
    assert "relu'(0) is undefined" in runs[0].data.tags["notes"]


def test_bad_learning_rate_is_rejected_before_any_run(store, capsys):
    with pytest.raises(SystemExit) as exc:
        worked(["s0.1", "--lr", "0", "--tracking-uri", store])
    assert exc.value.code == 2
    assert "--lr must be > 0, got 0.0" in capsys.readouterr().err
    # Checked before the store is touched: no experiment, no run.
    assert MlflowClient(store).get_experiment_by_name("worked-examples") is None
