"""The `neuralops` command's own behaviour: migrate, and clear failures."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from neuralops.servers.tooling.processes import ServerProcess


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neuralops.servers.tooling.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_migrate_applies_then_is_a_no_op(tmp_path: Path) -> None:
    env = ServerProcess(tmp_path).env
    first = _cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied now: 001_create_workflow_runs.sql" in first.stdout
    assert "POSTGRES_DSN is not set" in first.stderr  # the SQLite fallback says so
    again = _cli("migrate", env=env)
    assert "applied now: nothing (up to date)" in again.stdout


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, services="runhistory")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", proc.ports["runhistory"]))
        taken.listen()
        result = _cli("serve", "--services", "runhistory", env=proc.env)
    assert result.returncode == 2
    assert "runhistory cannot listen on 127.0.0.1:" in result.stderr
    assert "NEURALOPS_RUNHISTORY_ADDR" in result.stderr
    assert "Traceback" not in result.stderr
