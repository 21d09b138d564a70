"""End to end: the whole stack the way the README starts it (real Prometheus included),
the demo workflow through the hook, then runs, latest-run links and a signal."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port
from tests.procs import ServerProcess, grpcurl


def test_up_then_demo_shows_runs_latest_runs_and_a_signal(tmp_path: Path) -> None:
    # The configured Prometheus port is taken (as by a system Prometheus on 9090):
    # `up` must pick another one and say so.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    stack = ServerProcess(
        tmp_path / "stack",
        command="up",
        extra_env={
            "NEURALOPS_METRICS_PORT": str(free_port()),
            "NEURALOPS_PROMETHEUS_PORT": str(taken_port),
        },
    ).start()
    try:
        banner = stack.log.read_text()
        assert "Prometheus  http://127.0.0.1:" in banner and "(local, scraping" in banner
        assert f"port {taken_port} is taken" in banner
        assert f"Prometheus  http://127.0.0.1:{taken_port} " not in banner
        for port in stack.ports.values():
            assert f"127.0.0.1:{port}" in banner
        demo = subprocess.run(
            [sys.executable, "-m", "neuralops.servers.tooling.cli", "demo", "--seconds", "12"],
            env=stack.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert "\r" not in out  # no progress bars when the output is not a terminal
        assert "Runs stored per workflow:" in out
        assert "support-triage" in out and "billing-triage" in out
        assert "Signals raised by this run (" in out and "[support-triage]" in out
        # A sane hint (not "1250 spreads above"): a slow run as a multiple of the median
        # run time, in robust spreads when it is near it, or, when the demo's window
        # happened to hold one repeated value, said to have moved off it.
        hint = re.search(
            r"is ([\d.,]+)x its 30s median|x its robust spread (above|below) its|moved off its constant",
            out,
        )
        assert hint, out
        assert hint.group(1) is None or 3 <= float(hint.group(1).replace(",", "")) < 100_000

        reg = "neuralops.registry.v1.RegistryService"
        listed = json.loads(
            grpcurl(stack.address("registry"), f"{reg}/ListWorkflows", data={}).stdout
        )
        latest = {w["workflow_id"]: w.get("latest_run_id", "") for w in listed["workflows"]}
        assert set(latest) == {"support-triage", "billing-triage"}
        assert all(latest.values())
        for wf, run_id in latest.items():
            assert f"latest: {run_id}" in out
            runs = json.loads(
                grpcurl(
                    stack.address("registry"),
                    f"{reg}/ListWorkflowRuns",
                    data={"workflow_id": wf, "page_size": 1},
                ).stdout
            )["runs"]
            assert runs[0]["run_id"] == run_id  # the latest link is the newest run
        signals = json.loads(
            grpcurl(
                stack.address("insight"), "neuralops.insight.v1.InsightService/ListSignals", data={}
            ).stdout
        )["signals"]
        assert any(s["labels"].get("wpk_id") == "support-triage" for s in signals)
    finally:
        code = stack.stop()
        taken.close()
    assert code == 0
    assert "stopped" in stack.log.read_text()
