"""The servers the project starts (`ui`, `server`, `serve`, `dashboard`): a port checked first, and a
child that stops when its parent stops, however the parent stops.

`run_tied` starts the server in its own process group beside a watchdog
(`python -m experiments.tracking.servers PGID`) that stops the group once the pipe from this
process ends: how and why in docs/faults-and-security.md (Servers that stop with their parent).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from experiments.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
GRACE_S = 10  # seconds a server's process group gets between SIGTERM and SIGKILL


def check_port(host: str, port: int) -> None:
    """Refuse (ConfigError, exit 2) a port outside 1..65535 or one that host:port cannot bind."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: must be in 1..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
                "choose another port with --port or stop what uses it"
            ) from exc


def stop_group(pgid: int) -> None:
    """SIGTERM to a process group, SIGKILL after GRACE_S seconds if any of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)  # ProcessLookupError once the group is gone
            time.sleep(0.2)
        os.killpg(pgid, signal.SIGKILL)


def start_tied(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
    """Start `command` in its own process group, stopped by a watchdog when we end."""
    server = subprocess.Popen(list(command), env=dict(env), start_new_session=True)
    read_end, write_end = os.pipe()  # write_end stays open (and unused) until we end
    try:
        subprocess.Popen(
            [sys.executable, "-m", "experiments.tracking.servers", str(server.pid)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,  # a Ctrl-C in the terminal does not reach it
        )
    finally:
        os.close(read_end)
    _held.append(write_end)
    return server


_held: list[int] = []  # the pipes' write ends: closed by the kernel when this process ends


def run_tied(
    command: Sequence[str],
    env: Mapping[str, str],
    started: Callable[[subprocess.Popen], int | None] | None = None,
) -> int:
    """Run `command` as a tied server until it exits (its code), or until Ctrl-C (130) or
    SIGTERM (143) here, which stop it first. `started(server)`, called once it is started,
    may end the command early with an exit code (the server is stopped)."""
    server = start_tied(command, env)

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        code = started(server) if started else None
        return server.wait() if code is None else code
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            stop_group(server.pid)
            server.wait()


def _watch(pgid: int) -> None:
    """The watchdog: block until our standard input (the parent's pipe) ends, then stop."""
    with contextlib.suppress(OSError):
        while os.read(0, 1):  # nothing is ever written: b"" means the parent has ended
            pass
    stop_group(pgid)


if __name__ == "__main__":
    _watch(int(sys.argv[1]))
