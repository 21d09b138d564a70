"""Real processes for tests: the product's ServerProcess, and grpcurl that must succeed."""

from __future__ import annotations

import subprocess
from typing import Any

from neuralops.servers.tooling import processes
from neuralops.servers.tooling.processes import ServerProcess, grpcurl_path

__all__ = ["ServerProcess", "grpcurl", "grpcurl_path"]


def grpcurl(
    address: str, *args: str, data: dict[str, Any] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = processes.grpcurl(address, *args, data=data)
    if check:
        assert proc.returncode == 0, f"grpcurl {' '.join(args)} failed: {proc.stderr}"
    return proc
