"""Generated bad input (Hypothesis): argument lists through the commands' own entry point.

    python -m pytest tests/test_fuzz_input.py -s            # 200 cases, prints the split
    python -m pytest -m slow tests/test_fuzz_input.py -s    # 2,000 cases
    FUZZ_SEED=123 python -m pytest tests/test_fuzz_input.py # replay one seed

Every case goes in-process through `experiments.__main__.main` (`run --check`, `search
--check`, `evaluate --check`, `compare`) against one store shared by all cases. Most cases
are a real key of the experiment (configs/keys.json) with a value that is wrong for its
type (every declared type: numbers with bounds, whole numbers, true/false, text, lists,
choices, unions with null, class paths); the rest are near-miss and junk keys, YAML and JSON
fragments, unicode, shell metacharacters, path traversal, nan/inf, huge, tiny, negative and
empty values, and junk command flags. Each case must exit 0 or 2 and say nothing of the
libraries' internals; a real key with a value its type refuses gets exactly the message
`keyspec.refusal` gives (the key, the value, what is allowed); and no file, run, experiment
or registered model appears. A failing case found once is kept as an `@example`.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from experiments.__main__ import main as cli
from experiments.training import keyspec
from experiments.training.config import SHORTCUTS

FAST_CASES = 200
SLOW_CASES = 2000

SPECS = keyspec.catalog_specs()
EXPERIMENTS = sorted(SPECS)
STUDIES = ["lr", "activation", "regularization"]
NOT_IN_WORDS = (
    "Traceback",
    "NestedArg",
    "Subtypes",
    "<class",
    "Namespace(",
    "PositiveInt",
    "typing.",
    "expected null",
)

# --- values ----------------------------------------------------------------------------------

#: characters a shell argument can hold (no NUL, no lone surrogates)
ARG_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=16
)
FRAGMENTS = [
    "",
    " ",
    "null",
    "~",
    "None",
    "[]",
    "{}",
    "[1, 2",
    "{a: 1}",
    '{"a": [1, {"b": null}]}',
    "[[1], [2]]",
    "- a\n- b",
    "!!python/object/apply:os.system ['id']",
    "&anchor 1",
    "$(rm -rf /)",
    "`id`",
    "; ls",
    "| cat /etc/passwd",
    "&& echo x",
    "*",
    "../../etc/passwd",
    "/nonexistent",
    "~root",
    "C:\\Windows",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e309",
    "-1e309",
    "1e-320",
    "-0",
    "0",
    "-1",
    "1.5",
    "0x10",
    "1_000",
    "99999999999999999999999",
    "true",
    "yes",
    "off",
    "💥",
    "ẞ",
    "\t",
    "a\nb",
    "'quoted'",
    "models.ImageClassifier",
    "builtins.eval",
    "os.system",
    "torch.nn.Module",
]
NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e-300, max_value=1e-300).map(repr),
)
VALUES = st.one_of(st.sampled_from(FRAGMENTS), NUMBERS, ARG_TEXT)


def _near_miss(key: str, rng: random.Random) -> str:
    """A key with one typing slip: a letter dropped, doubled, swapped, or a wrong case."""
    i = rng.randrange(len(key))
    slips = [
        key[:i] + key[i + 1 :],
        key[:i] + key[i] + key[i:],
        key[:i] + key[i + 1 : i + 2] + key[i : i + 1] + key[i + 2 :],
        key.upper(),
        key.replace(".", "_"),
        key + "s",
    ]
    return rng.choice(slips) or "x"


# --- cases -----------------------------------------------------------------------------------


@st.composite
def cases(draw):
    """(kind, argv, expected message or None)."""
    kind = draw(
        st.sampled_from(
            ["bad value"] * 12 + ["near-miss key"] * 3 + ["junk key"] * 2 + ["flag"] * 3
        )
    )
    command = draw(st.sampled_from(["run", "run", "search", "evaluate", "compare"]))
    if command in ("evaluate", "compare") and kind != "flag":
        command = "run"
    experiment = draw(st.sampled_from(EXPERIMENTS)) if command == "run" else "s1-mlp"
    head = ["run", experiment] if command == "run" else ["search", draw(st.sampled_from(STUDIES))]
    specs = SPECS[experiment]
    value = draw(VALUES)
    expected = None
    if kind == "bad value":
        key = draw(st.sampled_from(sorted(specs)))
        if command == "search" and key.endswith("class_path"):
            key = "model.lr"
        expected = keyspec.refusal(key, value, specs[key])
        args = (
            [f"--{key}={value}"]
            if value.startswith("-") or draw(st.booleans())
            else [
                f"--{key}",
                value,
            ]
        )
    elif kind == "near-miss key":
        rng = random.Random(draw(st.integers(0, 2**32)))
        key = _near_miss(draw(st.sampled_from(sorted({*specs, *SHORTCUTS}))), rng)
        args = [f"--{key}={value}"]
    elif kind == "junk key":
        args = [f"--{draw(ARG_TEXT)}={value}"]
    else:
        return kind, _flag_case(draw, command, value), None
    return kind, [*head, *args, "--check"], expected


def _flag_case(draw, command: str, value: str) -> list[str]:
    """A command flag with a junk value (model references, URIs, names, counts)."""
    reference = draw(
        st.sampled_from(
            [value, "0" * 32, "runs:/" + value, "models:/" + value, "models:/x/1", value + ".ckpt"]
        )
    )
    flag = {
        "run": [
            "--tracking-uri",
            "--register",
            "--resume",
            "--config",
            "--system-metrics-interval",
        ],
        "search": [
            "--trials",
            "--timeout",
            "--workers",
            "--storage",
            "--study-name",
            "--pruner",
            "--sampler-seed",
            "--tracking-uri",
            "--register",
            "--base",
        ],
        "evaluate": ["--tracking-uri", "--config", "--data.data_dir", "--data.val_size"],
        "compare": [
            "--experiment",
            "--group-by",
            "--metric",
            "--study",
            "--filter",
            "--limit",
            "--tracking-uri",
        ],
    }[command]
    chosen = draw(st.sampled_from(flag))
    if command == "run":
        return ["run", "s1-mlp", f"{chosen}={value}", "--check"]
    if command == "search":
        return ["search", "lr", f"{chosen}={value}", "--check"]
    if command == "evaluate":
        return ["evaluate", reference, f"{chosen}={value}", "--check"]
    return ["compare", f"{chosen}={value}"]


# --- the shared store and what must not change ------------------------------------------------


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, empty_store_db):
    """One migrated store with one finished run (params, metrics, no model), in the working
    directory of every case."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("fuzz-store")
    db = folder / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store_db, db)
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("fashion-mnist")
    run = client.create_run(experiment, run_name="s1-mlp-seed0", tags={"experiment": "s1-mlp"})
    client.log_param(run.info.run_id, "model.lr", "0.05")
    client.log_metric(run.info.run_id, "test/acc", 0.8)
    client.set_terminated(run.info.run_id, "FINISHED")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


def _state(folder: Path) -> tuple:
    with sqlite3.connect(folder / "mlruns" / "mlflow.db") as con:
        rows = tuple(
            con.execute(f"select count(*) from {table}").fetchone()[0]
            for table in ("experiments", "runs", "registered_models", "tags")
        )
    files = {str(p.relative_to(folder)) for p in folder.rglob("*")}
    return rows, files, sorted(os.listdir(folder.parent))


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli(argv)
        except SystemExit as exc:  # argparse's own refusal of a command flag: exit 2
            code = exc.code
    return code, out.getvalue() + err.getvalue()


def _fuzz(n: int, shared_store: Path, capsys) -> None:
    chosen = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
    outcomes: Counter[str] = Counter()
    before = _state(shared_store)

    @hypothesis_seed(chosen)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,  # no .hypothesis/ folder: nothing may appear in the working directory
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases())
    @example(
        case=("bad value", ["run", "s1-mlp", "--trainer.max_time", "forever", "--check"], None)
    )
    @example(case=("flag", ["compare", "--tracking-uri=ftp://127.0.0.1/x"], None))
    @example(case=("flag", ["evaluate", " ", "--tracking-uri= ", "--check"], None))
    @example(case=("bad value", ["run", "s0-cnn", "--data.superclass", "", "--check"], None))
    @example(case=("flag", ["run", "s1-mlp", "--tracking-uri=redis://x", "--check"], None))
    def check_case(case):
        kind, argv, expected = case
        code, said = _run(argv)
        outcomes[f"{kind}: exit {code}"] += 1
        assert code in (0, 2), (argv, code, said)
        for word in NOT_IN_WORDS:
            assert word not in said, (argv, word, said)
        if expected is not None:
            assert code == 2 and expected in said, (argv, expected, said)
        assert _state(shared_store) == before, argv

    check_case()
    total = sum(outcomes.values())
    with capsys.disabled():
        split = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        print(f"\nfuzz seed {chosen} (FUZZ_SEED to replay): {total} cases: {split}")
    assert total >= n


def test_generated_bad_input_is_refused_in_words(shared_store, capsys):
    _fuzz(FAST_CASES, shared_store, capsys)


@pytest.mark.slow
def test_thousands_of_generated_inputs_are_refused_in_words(shared_store, capsys):
    _fuzz(SLOW_CASES, shared_store, capsys)
