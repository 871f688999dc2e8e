"""Worked examples S0.1 and S3: every gradient by the hand-derived chain rule AND by autograd.

    python -m experiments worked s0.1                      # seed defaults: weights 1, biases 0
    python -m experiments worked s0.1 --lr 0.005 --b1 -4   # any initial value, any learning rate
    python -m experiments worked s3                        # forward 0.82, four gradients
    python -m experiments worked s3 --y-true 0

What each example prints and logs, and why its chain-rule side (plain Python floats) is
independent of the autograd side (float64 tensors): docs/tracking.md (worked examples).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from experiments.seed_tasks import S3_REPORTED_OUTPUT

AGREE_TOL = 1e-9
EXPERIMENT_NAME = "worked-examples"

# S0.1 data from the seed task: (x1, x2) -> y.
S01_DATA = (((2.0, 2.0), 20.0), ((3.0, 4.0), 28.0))
# The five parameters in the seed's notation; `key` is the MLflow-safe name.
S01_PARAMS = (
    ("W1[1]", "W1_1"),
    ("W1[2]", "W1_2"),
    ("b[1]", "b1"),
    ("W2[1]", "W2_1"),
    ("b[2]", "b2"),
)

# S3 network from the seed task: sigmoid on both layers.
S3_W1 = ((0.4, 0.6, 0.2), (0.3, 0.9, 0.5))  # (inputs=2, hidden=3)
S3_B1 = (1.0, 1.0, 1.0)
S3_W2 = ((0.2,), (0.2,), (0.8,))  # (hidden=3, outputs=1)
S3_B2 = (0.5,)
S3_X = (1.0, 1.0)


@dataclass
class WorkedResult:
    """What a worked example logs: its printed text, params, final values, checks."""

    task: str
    text: str
    params: dict[str, str]
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)


class Printer:
    """Collects printed lines so the exact same text is shown and logged as the artifact."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _check_agree(what: str, chain: float, auto: float) -> float:
    diff = abs(chain - auto)
    if not diff <= AGREE_TOL:
        raise AssertionError(
            f"{what}: chain rule {chain!r} and autograd {auto!r} differ by {diff:.3e} "
            f"(> {AGREE_TOL:g})"
        )
    return diff


# --------------------------------------------------------------------------------------------
# S0.1: 2 inputs -> 1 hidden ReLU -> 1 output ReLU, squared error, SGD one example at a time.


def _relu(z: float) -> float:
    return z if z > 0 else 0.0


def _relu_grad(z: float) -> float:
    # relu'(0) is undefined; 0 is torch's choice (threshold backward uses z > 0) and ours.
    return 1.0 if z > 0 else 0.0


def s01_chain_rule(p: dict[str, float], x: tuple[float, float], y: float):
    """Forward values and the five derivatives dL/dp, by hand (plain floats)."""
    x1, x2 = x
    z1 = p["W1[1]"] * x1 + p["W1[2]"] * x2 + p["b[1]"]
    h = _relu(z1)
    z2 = p["W2[1]"] * h + p["b[2]"]
    y_hat = _relu(z2)
    loss = (y - y_hat) ** 2
    d_yhat = -2.0 * (y - y_hat)  # dL/dy_hat
    d_z2 = d_yhat * _relu_grad(z2)  # dL/dz2
    d_h = d_z2 * p["W2[1]"]  # dL/dh
    d_z1 = d_h * _relu_grad(z1)  # dL/dz1
    grads = {
        "W1[1]": d_z1 * x1,
        "W1[2]": d_z1 * x2,
        "b[1]": d_z1,
        "W2[1]": d_z2 * h,
        "b[2]": d_z2,
    }
    forward = {"z1": z1, "h": h, "z2": z2, "y_hat": y_hat, "L": loss, "dL/dy_hat": d_yhat}
    return forward, grads


def s01_autograd(p: dict[str, float], x: tuple[float, float], y: float, lr: float):
    """The same example in float64 torch: autograd's gradients, then an in-place SGD step.

    Returns (loss, {name: dL/dp}, {name: value after the step}).
    """
    import torch

    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p.items()}
    x1, x2 = (torch.tensor(v, dtype=torch.float64) for v in x)
    h = torch.relu(leaves["W1[1]"] * x1 + leaves["W1[2]"] * x2 + leaves["b[1]"])
    y_hat = torch.relu(leaves["W2[1]"] * h + leaves["b[2]"])
    loss = (torch.tensor(y, dtype=torch.float64) - y_hat) ** 2
    loss.backward()
    grads = {k: t.grad.item() for k, t in leaves.items()}
    with torch.no_grad():
        for t in leaves.values():
            t.sub_(lr * t.grad)
    return loss.item(), grads, {k: t.item() for k, t in leaves.items()}


def _fmt(value: float) -> str:
    # `+ 0.0` turns -0.0 (a zero gradient times a negative factor) into 0.0 for display.
    return f"{value + 0.0:.8f}"


def _term(value: float) -> str:
    """A number as a term of a printed sum: negative values in parentheses."""
    return f"({value:.8g})" if value < 0 else f"{value:.8g}"


def _s01_print_method(out: Printer, initial: dict[str, float], lr: float) -> None:
    """The network's equations, its chain rule, the update rule, the start values, the data."""
    out("S0.1 worked example: 2 inputs -> 1 hidden neuron -> 1 output neuron, ReLU on both")
    out()
    out("Forward equations")
    out("  z1    = W1[1] x1 + W1[2] x2 + b[1]")
    out("  h     = relu(z1)              = relu(W1[1] x1 + W1[2] x2 + b[1])")
    out("  z2    = W2[1] h + b[2]")
    out("  y_hat = relu(z2)              = relu(W2[1] h + b[2])")
    out("  L     = (y - y_hat)^2")
    out()
    out("Chain rule (relu'(z) = 1 if z > 0 else 0)")
    out("  dL/dy_hat = -2 (y - y_hat)")
    out("  dL/dW2[1] = dL/dy_hat * relu'(z2) * h")
    out("  dL/db[2]  = dL/dy_hat * relu'(z2)")
    out("  dL/dW1[1] = dL/dy_hat * relu'(z2) * W2[1] * relu'(z1) * x1")
    out("  dL/dW1[2] = dL/dy_hat * relu'(z2) * W2[1] * relu'(z1) * x2")
    out("  dL/db[1]  = dL/dy_hat * relu'(z2) * W2[1] * relu'(z1)")
    out()
    out("SGD update after each example: p <- p - lr * dL/dp")
    out(
        "Initial values: "
        + ", ".join(f"{name} = {initial[name]:g}" for name, _ in S01_PARAMS)
        + f"; learning rate lr = {lr:g}"
    )
    out(
        "Data (one epoch, in order): "
        + ", ".join(f"({x1:g}, {x2:g}) -> {y:g}" for (x1, x2), y in S01_DATA)
    )


def _s01_print_forward(out: Printer, i: int, x, y: float, chain: dict[str, float], fwd) -> None:
    """Example i's forward pass with the current (chain-rule side) parameter values."""
    out()
    out(f"Example {i}: x = ({x[0]:g}, {x[1]:g}), y = {y:g}")
    out(
        f"  z1 = {_term(chain['W1[1]'])}*{x[0]:g} + {_term(chain['W1[2]'])}*{x[1]:g} + "
        f"{_term(chain['b[1]'])} = {fwd['z1']:.8g}   h = relu(z1) = {fwd['h']:.8g}"
    )
    out(
        f"  z2 = {_term(chain['W2[1]'])}*{fwd['h']:.8g} + {_term(chain['b[2]'])} = {fwd['z2']:.8g}"
        f"   y_hat = relu(z2) = {fwd['y_hat']:.8g}"
    )
    out(
        f"  L = ({y:g} - {fwd['y_hat']:.8g})^2 = {fwd['L']:.8g}   "
        f"dL/dy_hat = {fwd['dL/dy_hat']:.8g}"
    )


def _s01_dead_units(i: int, fwd) -> list[str]:
    """A note for each ReLU with z <= 0 on example i: no gradient flows through it."""
    notes = []
    for unit, z, behind in (
        ("hidden", fwd["z1"], "W1[1], W1[2] and b[1]"),
        ("output", fwd["z2"], "all five parameters"),
    ):
        if z > 0:
            continue
        why = (
            "relu'(0) is undefined; we take 0, as torch's autograd does, so both columns agree"
            if z == 0
            else "the unit is dead on this example"
        )
        notes.append(
            f"example {i}: the {unit} ReLU has z = {z:.8g} <= 0, so relu'(z) = 0 ({why}): "
            f"no gradient flows through it, {behind} get a zero gradient and do not move"
        )
    return notes


def _s01_print_update(
    out: Printer, i: int, lr: float, chain, auto, g_chain, g_auto, metrics: dict[str, float]
) -> float:
    """The table of gradients and updated values, both ways; the largest difference."""
    out(f"  the 5 parameters after example {i}, computed two ways (lr = {lr:g}):")
    out(
        f"  {'parameter':<10}{'dL/dp chain rule':>20}{'dL/dp autograd':>20}"
        f"{'value chain rule':>20}{'value autograd':>20}{'|diff|':>10}"
    )
    max_diff = 0.0
    for name, key in S01_PARAMS:
        d_grad = _check_agree(f"example {i} dL/d{name}", g_chain[name], g_auto[name])
        d_value = _check_agree(f"example {i} {name}", chain[name], auto[name])
        diff = max(d_grad, d_value)
        max_diff = max(max_diff, diff)
        out(
            f"  {name:<10}{_fmt(g_chain[name]):>20}{_fmt(g_auto[name]):>20}"
            f"{_fmt(chain[name]):>20}{_fmt(auto[name]):>20}{diff:>10.1e}  agree"
        )
        metrics[f"example{i}/{key}"] = chain[name]
    return max_diff


def run_s01(initial: dict[str, float], lr: float) -> WorkedResult:
    out = Printer()
    _s01_print_method(out, initial, lr)
    chain = dict(initial)  # updated by the hand-derived gradients
    auto = dict(initial)  # updated by autograd's gradients
    metrics: dict[str, float] = {}
    notes: list[str] = []
    max_diff = 0.0
    for i, (x, y) in enumerate(S01_DATA, start=1):
        fwd, g_chain = s01_chain_rule(chain, x, y)
        loss_auto, g_auto, auto = s01_autograd(auto, x, y, lr)
        max_diff = max(max_diff, _check_agree(f"example {i} loss", fwd["L"], loss_auto))
        _s01_print_forward(out, i, x, y, chain, fwd)
        for note in _s01_dead_units(i, fwd):
            notes.append(note)
            out(f"  NOTE: {note}")
        for name, _ in S01_PARAMS:
            chain[name] -= lr * g_chain[name]
        diff = _s01_print_update(out, i, lr, chain, auto, g_chain, g_auto, metrics)
        max_diff = max(max_diff, diff)
        metrics[f"example{i}/loss"] = fwd["L"]
    out()
    out(
        f"Chain rule and autograd agree on every gradient and value (max |diff| {max_diff:.1e} <= {AGREE_TOL:g}): agree"
    )
    metrics.update({f"final/{key}": chain[name] for name, key in S01_PARAMS})
    metrics["max_abs_diff"] = max_diff
    params = {f"init.{key}": repr(initial[name]) for name, key in S01_PARAMS}
    params["lr"] = repr(lr)
    return WorkedResult("S0.1", out.text, params, metrics, notes)


# --------------------------------------------------------------------------------------------
# S3: 2 inputs -> 3 hidden sigmoid -> 1 output sigmoid, L = 1/2 (y_true - y_pred)^2.


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def s3_chain_rule(y_true: float):
    """Forward values and the gradients of w2, b2, w1, b1, by hand with plain floats."""
    x = S3_X
    z1 = [sum(x[i] * S3_W1[i][j] for i in range(2)) + S3_B1[j] for j in range(3)]
    h = [_sigmoid(z) for z in z1]
    z2 = sum(h[j] * S3_W2[j][0] for j in range(3)) + S3_B2[0]
    y_pred = _sigmoid(z2)
    loss = 0.5 * (y_true - y_pred) ** 2
    d_ypred = -(y_true - y_pred)  # dL/dy_pred
    delta2 = d_ypred * y_pred * (1 - y_pred)  # dL/dz2, sigmoid' = s (1 - s)
    delta1 = [delta2 * S3_W2[j][0] * h[j] * (1 - h[j]) for j in range(3)]  # dL/dz1
    grads = {
        "w2": [[h[j] * delta2] for j in range(3)],
        "b2": [delta2],
        "w1": [[x[i] * delta1[j] for j in range(3)] for i in range(2)],
        "b1": list(delta1),
    }
    forward = {"z1": z1, "h": h, "z2": z2, "y_pred": y_pred, "L": loss, "delta2": delta2}
    forward["delta1"] = delta1
    return forward, grads


def s3_autograd(y_true: float):
    import torch

    f64 = torch.float64
    w1 = torch.tensor(S3_W1, dtype=f64, requires_grad=True)
    b1 = torch.tensor(S3_B1, dtype=f64, requires_grad=True)
    w2 = torch.tensor(S3_W2, dtype=f64, requires_grad=True)
    b2 = torch.tensor(S3_B2, dtype=f64, requires_grad=True)
    x = torch.tensor([S3_X], dtype=f64)
    y_pred = torch.sigmoid(torch.sigmoid(x @ w1 + b1) @ w2 + b2)[0, 0]
    loss = 0.5 * (y_true - y_pred) ** 2
    g_w2, g_b2, g_w1, g_b1 = torch.autograd.grad(loss, [w2, b2, w1, b1])
    grads = {"w2": g_w2.tolist(), "b2": g_b2.tolist(), "w1": g_w1.tolist(), "b1": g_b1.tolist()}
    return y_pred.item(), loss.item(), grads


def _entries(grads: dict) -> list[tuple[str, float]]:
    """Flatten {"w1": [[..]], "b1": [..]} to [("w1[0][1]", v), ...] in the order w2, b2, w1, b1."""
    rows = []
    for name in ("w2", "b2", "w1", "b1"):
        value = grads[name]
        for i, item in enumerate(value):
            if isinstance(item, list):
                rows.extend((f"{name}[{i}][{j}]", float(v)) for j, v in enumerate(item))
            else:
                rows.append((f"{name}[{i}]", float(item)))
    return rows


def run_s3(y_true: float) -> WorkedResult:
    out = Printer()
    fwd, g_chain = s3_chain_rule(y_true)
    y_auto, loss_auto, g_auto = s3_autograd(y_true)
    max_diff = max(
        _check_agree("y_pred", fwd["y_pred"], y_auto), _check_agree("L", fwd["L"], loss_auto)
    )
    out("S3 worked example: 2 inputs -> 3 hidden (sigmoid) -> 1 output (sigmoid)")
    out(f"  w1 = {[list(r) for r in S3_W1]}, b1 = {list(S3_B1)}")
    out(f"  w2 = {[list(r) for r in S3_W2]}, b2 = {list(S3_B2)}, input x = {list(S3_X)}")
    out()
    out("Forward pass")
    for j in range(3):
        terms = " + ".join(f"{S3_X[i]:g}*{S3_W1[i][j]:g}" for i in range(2))
        out(
            f"  z1[{j}] = {terms} + {S3_B1[j]:g} = {fwd['z1'][j]:.6f}   "
            f"h[{j}] = sigmoid(z1[{j}]) = {fwd['h'][j]:.6f}"
        )
    terms = " + ".join(f"{fwd['h'][j]:.6f}*{S3_W2[j][0]:g}" for j in range(3))
    out(f"  z2 = {terms} + {S3_B2[0]:g} = {fwd['z2']:.6f}")
    out(f"  y_pred = sigmoid(z2) = {fwd['y_pred']:.6f}")
    out(f"  output (rounded): {fwd['y_pred']:.2f}")
    out()
    out(
        f"Loss L = 1/2 (y_true - y_pred)^2 with y_true = {y_true:g} (our choice, set with "
        "--y-true: the seed task does not give y_true)"
    )
    out(f"  L = 0.5 * ({y_true:g} - {fwd['y_pred']:.6f})^2 = {fwd['L']:.8f}")
    out()
    out("Chain rule (sigmoid'(z) = s(z) (1 - s(z)))")
    out("  delta2 = dL/dz2 = -(y_true - y_pred) * y_pred (1 - y_pred)" + f" = {fwd['delta2']:.8f}")
    out("  dL/dw2[j] = h[j] * delta2        dL/db2 = delta2")
    out(
        "  delta1[j] = dL/dz1[j] = delta2 * w2[j] * h[j] (1 - h[j])"
        + " = ["
        + ", ".join(f"{d:.8f}" for d in fwd["delta1"])
        + "]"
    )
    out("  dL/dw1[i][j] = x[i] * delta1[j]  dL/db1[j] = delta1[j]")
    out()
    out("Gradients, chain rule vs autograd")
    out(f"  {'gradient':<16}{'chain rule':>18}{'autograd':>18}{'|diff|':>10}")
    auto_rows = dict(_entries(g_auto))
    metrics: dict[str, float] = {"y_pred": fwd["y_pred"], "loss": fwd["L"]}
    for name, value in _entries(g_chain):
        diff = _check_agree(f"dL/d{name}", value, auto_rows[name])
        max_diff = max(max_diff, diff)
        out(f"  dL/d{name:<12}{value:>18.10f}{auto_rows[name]:>18.10f}{diff:>10.1e}  agree")
        metrics["grad/" + name.replace("[", "_").replace("]", "")] = value
    out()
    out(
        f"Chain rule and autograd agree on all 4 gradients (max |diff| {max_diff:.1e} <= {AGREE_TOL:g}): agree"
    )
    metrics["max_abs_diff"] = max_diff
    return WorkedResult("S3", out.text, {"y_true": repr(y_true)}, metrics)


# --------------------------------------------------------------------------------------------
# Tracking and command line.


def log_worked(result: WorkedResult, artifact: str, tracking_uri: str | None) -> tuple[str, str]:
    """One small FINISHED MLflow run holding the printed text, params and final values."""
    from mlflow.entities import Metric

    from experiments.tracking import store

    uri = store.resolve_tracking_uri(tracking_uri)
    client = store.client(uri)
    experiment_id = store.ensure_experiment(client, uri, EXPERIMENT_NAME)
    tags = {"task": result.task, "kind": "worked", **store.environment_tags()}
    run = client.create_run(experiment_id, run_name=f"worked-{result.task.lower()}", tags=tags)
    run_id = run.info.run_id
    try:
        store.log_params(client, run_id, result.params)
        stamp = run.info.start_time
        metrics = [Metric(k, float(v), stamp, 0) for k, v in result.metrics.items()]
        for start in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[start : start + 500])
        client.log_text(run_id, result.text, artifact)
        if result.notes:
            client.set_tag(run_id, "notes", " | ".join(result.notes)[:5000])
    except BaseException as exc:
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id, uri


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments worked",
        description="Worked examples of the seed tasks, autograd vs the hand chain rule.",
    )
    sub = parser.add_subparsers(dest="example", required=True, metavar="EXAMPLE")
    s01 = sub.add_parser(
        "s0.1",
        help="S0.1: 5-parameter ReLU network, one SGD epoch on (2,2)->20, (3,4)->28",
        description="Initial values default to the seed's: all weights 1, biases 0.",
    )
    s01.add_argument("--w1-1", type=float, default=1.0, help="W1[1], weight of x1 (default 1)")
    s01.add_argument("--w1-2", type=float, default=1.0, help="W1[2], weight of x2 (default 1)")
    s01.add_argument("--b1", type=float, default=0.0, help="b[1], hidden bias (default 0)")
    s01.add_argument("--w2-1", type=float, default=1.0, help="W2[1], output weight (default 1)")
    s01.add_argument("--b2", type=float, default=0.0, help="b[2], output bias (default 0)")
    s01.add_argument(
        "--lr",
        type=float,
        default=0.01,
        help="learning rate (default 0.01: steps of at most ~1.3 at the seed's initial "
        "values, numbers stay readable; 0.1 overshoots to y_hat ~ 760 on the 2nd example)",
    )
    s3 = sub.add_parser(
        "s3", help=f"S3: forward pass {S3_REPORTED_OUTPUT} and the gradients of w2, b2, w1, b1"
    )
    s3.add_argument(
        "--y-true",
        type=float,
        default=1.0,
        help="target of L = 1/2 (y_true - y_pred)^2 (default 1: ours, the seed gives none)",
    )
    for p in (s01, s3):
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    args = parser.parse_args(list(argv))

    values = [v for k, v in vars(args).items() if isinstance(v, float)]
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        parser.error(f"every number must be finite, got {bad}")
    if args.example == "s0.1":
        if args.lr <= 0:
            parser.error(f"--lr must be > 0, got {args.lr}")
        initial = {name: getattr(args, key.lower()) for name, key in S01_PARAMS}  # --w1-1 ...
        result = run_s01(initial, args.lr)
        artifact = "worked_s0.1.txt"
    else:
        result = run_s3(args.y_true)
        artifact = "worked_s3.txt"
    run_id, uri = log_worked(result, artifact, args.tracking_uri)
    from experiments.tracking import store

    print(f"\nMLflow run {run_id} (FINISHED) in experiment '{EXPERIMENT_NAME}' at {uri}")
    print(f"Open the UI: {store.ui_command(uri)}")
    return 0
