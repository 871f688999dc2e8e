"""Helpers shared by the test files, one copy each (fixtures live in tests/conftest.py).

* `RunIf` (run_if.py): skip a test when a system component it needs is missing; a failure
  instead under EXPERIMENTS_REQUIRE_ALL=1 (CI).
* commands.py: `REPO`, `child_env`, `run_cli` (`python -m experiments` in a fresh process),
  `free_port`, `stop_group`.
* data.py: `data_overrides`, `tiny` (s1-mlp on the tiny Fashion-MNIST), `write_space`.
"""

from tests.helpers.commands import REPO, child_env, free_port, run_cli, stop_group
from tests.helpers.data import data_overrides, tiny, write_space
from tests.helpers.run_if import RunIf

__all__ = [
    "REPO",
    "RunIf",
    "child_env",
    "data_overrides",
    "free_port",
    "run_cli",
    "stop_group",
    "tiny",
    "write_space",
]
