"""Operating the services without surprises: one server per port, clear one-line
errors, no process left behind after a signal, `make up` stoppable by its pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from neuralops.servers.tooling import localprom
from neuralops.servers.tooling.processes import ServerProcess

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neuralops.servers.tooling.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        found |= kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p for p in pids if _alive(p)}
        if not left:
            return left
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def test_version() -> None:
    out = _cli("--version", env=dict(os.environ))
    assert out.returncode == 0 and out.stdout.startswith("neuralops 0."), out


def test_a_second_server_on_the_same_ports_exits_with_one_line(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "first", services="registry").start()
    try:
        env = {**first.env, "NEURALOPS_DATA_DIR": str(tmp_path / "second")}
        second = _cli("serve", "--services", "registry", env=env)
    finally:
        first.stop()
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert lines[-1] == (
        f"neuralops: registry cannot listen on 127.0.0.1:{first.ports['registry']}: the port is "
        "taken or not ours (set NEURALOPS_REGISTRY_ADDR)"
    )
    assert "Traceback" not in second.stderr and "ready" not in second.stdout


def test_a_taken_metrics_port_exits_with_one_line(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, services="registry")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(
            "serve", "--services", "registry", env={**proc.env, "NEURALOPS_METRICS_PORT": str(port)}
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"neuralops: metrics cannot listen on 127.0.0.1:{port}: the port is taken or not ours "
        "(set NEURALOPS_METRICS_PORT)"
    )
    assert "Traceback" not in result.stderr


def test_one_prometheus_per_data_directory_and_leftovers_are_stopped(tmp_path: Path) -> None:
    first = localprom.LocalPrometheus(tmp_path / "prom", free_port()).start()
    try:
        second = localprom.LocalPrometheus(tmp_path / "prom", free_port())
        with pytest.raises(localprom.DataDirBusy, match=f"pid {os.getpid()}"):
            second.start()
        # The owner goes away without stopping its Prometheus (as after a crash).
        first._release_lock()
        assert first.proc is not None and first.proc.poll() is None
        third = localprom.LocalPrometheus(tmp_path / "prom", free_port()).start()
        try:
            first.proc.wait(30)  # the leftover was stopped, not duplicated
            assert third.proc is not None and third.proc.poll() is None
        finally:
            third.stop()
    finally:
        first.stop()


def _up(tmp_path: Path) -> ServerProcess:
    return ServerProcess(
        tmp_path / "up",
        command="up",
        extra_env={
            "NEURALOPS_METRICS_PORT": str(free_port()),
            "NEURALOPS_PROMETHEUS_PORT": str(free_port()),
        },
    )


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL])
def test_up_leaves_no_process_behind(tmp_path: Path, sig: signal.Signals) -> None:
    up = _up(tmp_path).start()
    assert up.proc is not None
    pids = _children(up.proc.pid)
    prom_pid = int((up.data_dir / "prometheus" / "prometheus.pid").read_text())
    assert prom_pid in pids
    code = up.stop(sig)
    assert code == (0 if sig == signal.SIGHUP else -signal.SIGKILL)
    assert _wait_gone(pids) == set(), "left running after " + sig.name
    if sig == signal.SIGHUP:
        assert "received SIGHUP" in up.log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_make_up_stops_on_a_signal_to_its_own_pid(tmp_path: Path, sig: signal.Signals) -> None:
    # make passes SIGTERM on; on SIGINT it would wait for its child forever, but the
    # stack sees make drop its handler (it is being stopped) and stops itself.
    env = _up(tmp_path).env
    log = tmp_path / "make.log"
    with open(log, "w") as out:
        make = subprocess.Popen(
            ["make", "-s", "up"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while "\nready\n" not in log.read_text() and time.monotonic() < deadline:
            assert make.poll() is None, log.read_text()
            time.sleep(0.1)
        pids = _children(make.pid)
        assert len(pids) >= 2, pids  # neuralops and its Prometheus
        make.send_signal(sig)
        make.wait(60)
        assert _wait_gone(pids) == set()
        assert "received SIGTERM" in log.read_text()
        assert "stopped" in log.read_text()
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()


def test_a_server_child_stops_when_its_starter_is_killed(tmp_path: Path) -> None:
    # A test run or benchmark killed with SIGKILL leaves no server behind: the child is
    # started under `setpriv --pdeathsig` (not a preexec_fn, which forks the whole
    # starting process, gRPC included).
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from neuralops.servers.tooling.processes import ServerProcess\n"
        "srv = ServerProcess(Path(sys.argv[1]), services='runhistory').start()\n"
        "print(srv.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "srv")], stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    child = int(starter.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    starter.kill()
    starter.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break  # gone (reaped by init)
        if state == "Z":
            break  # exited, not yet reaped
        time.sleep(0.1)
    else:
        pytest.fail(f"server pid {child} still running after its starter was killed")
