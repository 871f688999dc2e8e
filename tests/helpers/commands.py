"""The repository root, environments for child processes, the CLI in a fresh process (or in
this one, or started and left running), ports, and stopping a process group a test started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

#: The repository root (the folder holding experiments/, models/, datamodules/, tests/).
REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process: the project first on PYTHONPATH, no
    MLFLOW_TRACKING_URI leaked from the developer's shell, then `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def run_cli(
    *args: str,
    cwd: Path,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`python -m experiments ARGS` in a fresh process in `cwd`; its output captured as text.

    By default the process gets a minimal environment (the project on PYTHONPATH,
    PATH=/usr/bin:/bin and, when `home` is given, HOME), so nothing of the caller's leaks in;
    `env` replaces that environment (e.g. `child_env()`), HOME still set from `home`.
    """
    env = dict(env) if env is not None else {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run_main(*args: str, capsys) -> tuple[int, str, str]:
    """`python -m experiments ARGS` in this process (`experiments.__main__.main`), its output
    taken from pytest's `capsys`: (exit code, stdout, stderr); an argparse exit (SystemExit)
    gives its code. For the tests where a real process is not the point: a fresh process
    (`run_cli`) pays seconds of imports."""
    from experiments.__main__ import main

    capsys.readouterr()  # only this command's output
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def start_cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """`python -m experiments ARGS` started in its own process group (so `stop_group` ends it
    with the servers it starts), its stdout and stderr together on `proc.stdout`, as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", *args],
        cwd=cwd,
        env=dict(env) if env is not None else child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def free_port(ports: range, exclude: tuple[int, ...] = ()) -> int:
    """The first port of `ports` (not in `exclude`) that can be bound on 127.0.0.1."""
    for port in ports:
        if port in exclude:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} on 127.0.0.1")


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """End the process group of `proc` (started with `start_new_session=True`): SIGTERM,
    then SIGKILL after `timeout` s (an mlflow server's workers may ignore SIGTERM)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
