"""Servers a test started: is a port listened on, wait for it, and does it close when the
command that started it is killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.commands import child_env, stop_group


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else proc.log.read_text()
            pytest.fail(f"exited with {proc.returncode}: {output[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listened on port {port} within {timeout} s")
        time.sleep(0.5)


def seconds_until_closed(port: int, limit: float = 60) -> float:
    start = time.monotonic()
    while listening(port) and time.monotonic() - start < limit:
        time.sleep(0.2)
    return time.monotonic() - start


def kill_listeners(port: int) -> None:
    """Cleanup after a failure: whatever still listens on `port`, with its process group."""
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(conn.pid), signal.SIGKILL)


def assert_port_closes_when_killed(proc: subprocess.Popen, port: int, signum: int) -> None:
    """Send `signum` to the command's own process (not its group); its server must go."""
    try:
        wait_listening(port, proc)
        proc.send_signal(signum)
        proc.wait(timeout=60)
        waited = seconds_until_closed(port)
        assert waited <= 30, f"port {port} still open {waited:.0f} s after {signum.name}"
        assert not listening(port)
    finally:
        stop_group(proc)
        kill_listeners(port)


def start_server(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    """`python -m experiments server` on a SQLite file, one uvicorn worker, loopback."""
    command = [
        *(sys.executable, "-m", "experiments", "server", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{tmp_path}/runs.db", "--workers", "1"),
        *("--artifacts-destination", str(tmp_path / "artifacts"), *extra),
    ]
    # Its output goes to a file: a pipe nobody reads fills up with the access log (64 KB,
    # a few hundred requests) and the server then hangs writing to it.
    log = tmp_path / f"server-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log = log
    return proc
