"""`RunIf`: skip a test, with its reason in words, when a system component it needs is missing.

    from tests.helpers import RunIf

    @RunIf(postgres_server=True, postgres_driver=True)
    def test_on_a_real_postgresql(): ...

The components (`COMPONENTS`), each checked once per session:

* ``postgres_server``: Debian's PostgreSQL server binaries (``initdb``, ``pg_ctl``; as root
  also ``runuser`` and the ``postgres`` user the cluster runs as): ``apt-get install postgresql``.
* ``postgres_driver``: the DB-API driver SQLAlchemy opens ``postgresql://`` URLs with (psycopg 3
  with SQLAlchemy >= 2.1, psycopg2 with 2.0): ``pip install -e ".[postgres]"``.
* ``chromium``: Debian's ``chromium`` and ``chromedriver`` on PATH:
  ``apt-get install chromium chromium-driver``.
* ``fashion_mnist``: the real Fashion-MNIST in /usr/share/datasets/fashion-mnist:
  ``apt-get install dataset-fashion-mnist``.

Besides these, ``RunIf(executables=[...], modules=[...])`` needs programs on PATH and
importable Python modules.

With ``EXPERIMENTS_REQUIRE_ALL=1`` (set by ``.ci/run``, which installs everything) a missing
component is an error of the test instead of a skip, so CI cannot skip a test silently.

`RunIf` only marks the test (``@pytest.mark.run_if``); tests/conftest.py's hooks act on it:
`skip_missing` (at collection) adds a skip mark with the reason, `fail_missing` (at setup,
before any fixture) fails the test under EXPERIMENTS_REQUIRE_ALL=1. A fixture can call
`require` itself.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import pwd
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The environment variable that turns a missing component into a failure.
REQUIRE_ALL = "EXPERIMENTS_REQUIRE_ALL"
MARKER = "run_if"
#: Where Debian's dataset-fashion-mnist installs the four gzip IDX files (the names of
#: datamodules.fashion_mnist.IDX_FILES, not imported here: that imports Lightning, seconds).
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class Component:
    """A system component: `check` returns None when present, else what is missing."""

    name: str
    check: Callable[[], str | None]
    install: str

    def missing(self) -> str | None:
        found = self.check()
        return None if found is None else f"{found}; install: {self.install}"


# --- the checks -------------------------------------------------------------------------


def pg_bin() -> Path | None:
    """The folder of the newest PostgreSQL server binaries (Debian's /usr/lib/postgresql/N/bin
    first, then initdb on PATH); None when there are none."""

    def version(path: str) -> int:
        try:
            return int(Path(path).parents[1].name)
        except ValueError:
            return 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _postgres_server() -> str | None:
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        return "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the tests run it as `postgres`
        if shutil.which("runuser") is None:
            return "running as root, the PostgreSQL tests need runuser"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, the PostgreSQL tests need the `postgres` user"
    return None


def _postgres_driver() -> str | None:
    try:
        from sqlalchemy.engine import make_url

        dialect = make_url("postgresql://").get_dialect()
        dialect.import_dbapi()
    except ImportError as exc:
        return f"no PostgreSQL driver for SQLAlchemy's postgresql:// URLs ({exc})"
    return None


def _chromium() -> str | None:
    absent = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return f"{' and '.join(absent)} not found on PATH" if absent else None


def _fashion_mnist() -> str | None:
    if all((SYSTEM_FASHION_MNIST / name).is_file() for name in FASHION_MNIST_FILES):
        return None
    return f"the real Fashion-MNIST is not installed in {SYSTEM_FASHION_MNIST}"


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("postgres_server", _postgres_server, "Debian: apt-get install postgresql"),
        Component("postgres_driver", _postgres_driver, "pip install -e '.[postgres]'"),
        Component("chromium", _chromium, "Debian: apt-get install chromium chromium-driver"),
        Component("fashion_mnist", _fashion_mnist, "Debian: apt-get install dataset-fashion-mnist"),
    )
}


def _executable(name: str) -> str | None:
    return None if shutil.which(name) else f"the program {name!r} is not on PATH"


def _module(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        return f"the Python module {name!r} cannot be imported ({exc})"
    return None


@functools.cache
def missing_one(requirement: str) -> str | None:
    """What is missing of one requirement (a component name, `executable:NAME` or
    `module:NAME`), in words; None when it is present. Checked once per session."""
    kind, _, name = requirement.partition(":")
    if kind == "executable" and name:
        return _executable(name)
    if kind == "module" and name:
        return _module(name)
    if requirement not in COMPONENTS:
        raise ValueError(
            f"RunIf: unknown component {requirement!r}; known: {', '.join(COMPONENTS)}, "
            "executable:NAME, module:NAME"
        )
    return COMPONENTS[requirement].missing()


def missing(requirements: Iterable[str]) -> list[str]:
    """What is missing of `requirements`, one sentence each; empty when all are present."""
    return [reason for r in requirements if (reason := missing_one(r)) is not None]


def require_all(environ: Mapping[str, str] | None = None) -> bool:
    """Whether `EXPERIMENTS_REQUIRE_ALL` asks for every component to be present."""
    value = (os.environ if environ is None else environ).get(REQUIRE_ALL, "")
    return value.strip().lower() not in {"", "0", "false", "no", "off"}


def decide(reasons: list[str], environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """("run", ""), ("skip", reason) or ("fail", reason) for a test missing `reasons`."""
    if not reasons:
        return "run", ""
    reason = "missing system component: " + " | ".join(reasons)
    if require_all(environ):
        return "fail", f"{REQUIRE_ALL}=1 (CI: every component installed), but {reason}"
    return "skip", reason


def require(*requirements: str) -> None:
    """Skip the running test (or fail it, under EXPERIMENTS_REQUIRE_ALL=1) when one of
    `requirements` is missing. Usable in a test or a fixture."""
    action, reason = decide(missing(requirements))
    if action == "fail":
        pytest.fail(reason, pytrace=False)
    if action == "skip":
        pytest.skip(reason)


def RunIf(
    *,
    postgres_server: bool = False,
    postgres_driver: bool = False,
    chromium: bool = False,
    fashion_mnist: bool = False,
    executables: Iterable[str] = (),
    modules: Iterable[str] = (),
) -> pytest.MarkDecorator:
    """Mark a test as needing these components (see the module's docstring)."""
    flags = {
        "postgres_server": postgres_server,
        "postgres_driver": postgres_driver,
        "chromium": chromium,
        "fashion_mnist": fashion_mnist,
    }
    requirements = [name for name, wanted in flags.items() if wanted]
    requirements += [f"executable:{name}" for name in executables]
    requirements += [f"module:{name}" for name in modules]
    if not requirements:
        raise ValueError("RunIf: name at least one component")
    return getattr(pytest.mark, MARKER)(*requirements)


def register(config: pytest.Config) -> None:
    """Declare the marker (the suite runs with --strict-markers); for `pytest_configure`."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*components): skip (fail under {REQUIRE_ALL}=1) when a system component "
        "is missing; use tests.helpers.RunIf",
    )


def requirements_of(item: pytest.Item) -> list[str]:
    return [r for mark in item.iter_markers(MARKER) for r in mark.args]


def skip_missing(items: list[pytest.Item]) -> None:
    """Mark the tests whose components are missing to be skipped, with the reason; for
    `pytest_collection_modifyitems`. (pytest reports such a skip at the test's own line.)"""
    for item in items:
        if requirements := requirements_of(item):
            action, reason = decide(missing(requirements))
            if action == "skip":
                item.add_marker(pytest.mark.skip(reason=reason))


def fail_missing(item: pytest.Item) -> None:
    """Under EXPERIMENTS_REQUIRE_ALL=1, fail a test whose components are missing, before its
    fixtures are set up; for `pytest_runtest_setup`."""
    if requirements := requirements_of(item):
        action, reason = decide(missing(requirements))
        if action == "fail":
            pytest.fail(reason, pytrace=False)
