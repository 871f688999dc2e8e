"""Helpers shared by the test files, one copy each (fixtures live in tests/conftest.py).

* `RunIf` (run_if.py): skip a test when a system component it needs is missing; a failure
  instead under EXPERIMENTS_REQUIRE_ALL=1 (CI).
* commands.py: `REPO`, `child_env`, `run_cli` (`python -m experiments` in a fresh process),
  `run_main` (the same in this process), `start_cli` (started, left running), `free_port`,
  `stop_group`.
* servers.py: `listening`, `wait_listening`, `assert_port_closes_when_killed`, `start_server`, ... (servers
  a test started).
* data.py: `data_overrides`, `catalog_overrides` (what conftest's `catalog_run` trains),
  `tiny` (s1-mlp on the tiny Fashion-MNIST), `write_space`.
* stores.py: `copy_store` (a test's own copy of a store a session fixture shares).
"""

from tests.helpers.commands import (
    REPO,
    child_env,
    free_port,
    run_cli,
    run_main,
    start_cli,
    stop_group,
)
from tests.helpers.data import catalog_overrides, data_overrides, tiny, write_space
from tests.helpers.run_if import RunIf
from tests.helpers.stores import copy_store

__all__ = [
    "REPO",
    "RunIf",
    "catalog_overrides",
    "child_env",
    "copy_store",
    "data_overrides",
    "free_port",
    "run_cli",
    "run_main",
    "start_cli",
    "stop_group",
    "tiny",
    "write_space",
]
