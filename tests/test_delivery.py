"""Delivery that no single run can stop (issue 9), against real servers.

The drills live in benchmarks/delivery.py; the report (`python -m benchmarks.delivery`)
runs the same functions with more repetitions.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from neuralops.clients import NotFoundError, RunHistoryClient, log_run
from neuralops.clients.deadletter import DeadLetters
from neuralops.clients.delivery import RunSender, sender_for
from neuralops.clients.exporter import is_transient
from neuralops.clients.framing import frame
from neuralops.clients.spool import Spool
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from benchmarks import delivery as drills
from benchmarks.delivery import run_msg
from tests.conftest import free_port
from tests.helpers import wait_for
from tests.procs import ServerProcess

only_postgres = pytest.mark.parametrize("backend", ["postgres"])
one_backend = pytest.mark.parametrize("backend", ["sqlite"])  # the backend is not the point


@pytest.fixture
def runhistory(config: Config) -> Iterator[App]:
    app = App(config, services=("runhistory",), ports={"runhistory": 0}).start()
    yield app
    app.stop(grace=1)


def _ids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


# ------------------------------------------------------------ classification


def test_failures_are_classified_transient_or_permanent() -> None:
    code = grpc.StatusCode
    assert is_transient(code.UNAVAILABLE, "connection refused")
    assert is_transient(code.DEADLINE_EXCEEDED, "")
    assert is_transient(code.RESOURCE_EXHAUSTED, "in-flight byte budget full; retry")
    assert not is_transient(code.RESOURCE_EXHAUSTED, "Sent message larger than max (5 vs. 4)")
    assert not is_transient(code.RESOURCE_EXHAUSTED, "Received message larger than max (9 vs. 4)")
    for permanent in (code.INVALID_ARGUMENT, code.INTERNAL, code.UNKNOWN, code.UNIMPLEMENTED):
        assert not is_transient(permanent, "")


# -------------------------------------------------------------------- framing


@one_backend
def test_a_torn_record_is_skipped_and_the_records_around_it_replay(
    runhistory: App, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append([run_msg("torn", "a0"), run_msg("torn", "a1")])
    (path,) = list((tmp_path / "spool").iterdir())
    later = b"".join(frame(run_msg("torn", r).SerializeToString()) for r in ("b0", "b1"))
    # A writer killed mid-record, then a later process appending to the same file.
    with open(path, "ab") as f:
        f.write(later[: len(later) // 3] + later)
    # And a flipped byte inside the first record's payload.
    damaged = bytearray(path.read_bytes())
    damaged[20] ^= 0xFF
    path.write_bytes(bytes(damaged))

    assert [r.run_id for r in Spool.read(path)] == ["a1", "b0", "b1"]
    assert spool.status().damaged == 2
    sender = RunSender(runhistory.address("runhistory"), spool_dir=tmp_path / "spool")
    try:
        sender.replay_now()
        assert sender.spool.pending() == 0
        assert sender.stats()["damaged"] == 2
    finally:
        sender.close()
    client = RunHistoryClient(runhistory.address("runhistory"))
    for rid in ("a1", "b0", "b1"):
        assert client.get_run("torn", rid).run_id == rid


def test_spool_cap_drops_oldest_and_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender = RunSender(
        f"localhost:{free_port()}", spool_dir=tmp_path / "spool", max_spool_bytes=40_000
    )
    try:
        for i in range(10):
            sender.spool.claim()  # each batch in its own file, so the oldest can go
            for p in (tmp_path / "spool").glob("*.replaying-*"):
                sender.spool.release(p)
            assert sender.keep([run_msg("cap", f"{i}-{j}", text="z" * 1000) for j in range(10)])
        kept = sender.spool.pending()
        assert sender.stats()["dropped"] == 100 - kept > 0
        assert sender.spool.status().bytes <= 40_000
        assert "dropped" in caplog.text and "oldest" in caplog.text
        survivors = {r.run_id for p in (tmp_path / "spool").iterdir() for r in Spool.read(p)}
        assert "9-9" in survivors and "0-0" not in survivors
    finally:
        sender.close()


# ------------------------------------------------------------------- isolation


def test_refused_runs_are_isolated_and_dead_lettered(runhistory: App, tmp_path: Path) -> None:
    """A batch the server refuses (here: runs with no wpk_id) is halved until the
    refused runs are alone; every other run is stored."""
    addr = runhistory.address("runhistory")
    sender = RunSender(addr, spool_dir=tmp_path / "spool")
    ids = _ids(300, "iso")
    try:
        for i, rid in enumerate(ids):
            sender.submit(run_msg("" if i in (7, 200) else "iso", rid))
        assert sender.flush(30)
        assert sender.spool.pending() == 0
        dead = list(sender.dead_letters.entries())
        assert sorted(d.run.run_id for d in dead) == ["iso-0007", "iso-0200"]
        assert {d.code for d in dead} == {"INVALID_ARGUMENT"}
        assert sender.stats()["dead_lettered"] == 2
    finally:
        sender.close()
    assert len(drills.stored(addr, "iso", ids)) == 298


def test_a_builder_that_fails_or_returns_no_run_drops_only_itself(
    runhistory: App, tmp_path: Path
) -> None:
    """Items may be functions building the run on the worker (the hook's are). One that
    raises or returns something other than a Run is dropped and counted; the runs
    batched with it are stored."""
    addr = runhistory.address("runhistory")
    sender = RunSender(addr, spool_dir=tmp_path / "spool")
    ids = _ids(50, "bld")

    def boom() -> Any:
        raise RuntimeError("builder bug")

    def nothing() -> Any:
        return None

    try:
        for i, rid in enumerate(ids):
            sender.submit(functools.partial(run_msg, "bld", rid))
            if i == 10:
                sender.submit(nothing)
            if i == 30:
                sender.submit(boom)
        assert sender.flush(30)
        assert sender.stats()["dropped"] == 2
        assert sender.spool.pending() == 0 and not list(sender.dead_letters.entries())
    finally:
        sender.close()
    assert len(drills.stored(addr, "bld", ids)) == 50


@only_postgres
def test_a_nul_run_among_1000_on_postgres_blocks_nothing(runhistory: App, tmp_path: Path) -> None:
    r = drills.poison_drill(runhistory.address("runhistory"), tmp_path / "client")
    assert r.spool_empty_s is not None, "spool not empty within 30 s"
    if r.stored == 999:  # the server refuses the NUL run: it is a dead letter, with its reason
        ((run_id, code, message),) = r.dead
        assert run_id.endswith("-00020") and code and message
    else:
        assert r.stored == 1000 and not r.dead


@one_backend
def test_spool_command_lists_retries_and_purges_dead_letters(
    runhistory: App, tmp_path: Path
) -> None:
    addr = runhistory.address("runhistory")
    letters = DeadLetters(tmp_path / "deadletter")
    letters.add(run_msg("cli", "fixed-now"), "INTERNAL", "a server bug, since fixed")
    letters.add(run_msg("", "still-bad"), "INVALID_ARGUMENT", "wpk_id: required")
    Spool(tmp_path / "spool").append([run_msg("cli", "spooled")])
    (spooled,) = list((tmp_path / "spool").iterdir())  # as left by a process now gone:
    spooled.rename(spooled.with_name("runs-999999999-1-x.spool"))
    env = {**os.environ, "NEURALOPS_DATA_DIR": str(tmp_path), "NEURALOPS_RUNHISTORY_ADDR": addr}

    def spool_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        # Only the client package: the check below proves no server module came along.
        code = (
            "import sys; from neuralops.clients import spool_cli; rc = spool_cli.main(sys.argv[1:]);"
            "bad = [m for m in sys.modules if m.startswith(('neuralops.servers', 'psycopg'))];"
            "print('SERVER-MODULES', bad) if bad else None; sys.exit(rc)"
        )
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    st = spool_cmd("status", "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["spool"]["runs"] == 1
    assert sorted((d["run_id"], d["code"]) for d in status["dead_letters"]) == [
        ("fixed-now", "INTERNAL"),
        ("still-bad", "INVALID_ARGUMENT"),
    ]
    retry = spool_cmd("retry")
    assert retry.returncode == 1, retry.stderr  # one dead letter is still refused
    assert "1 stored, 1 still refused" in retry.stdout and "SERVER-MODULES" not in retry.stdout
    client = RunHistoryClient(addr)
    assert client.get_run("cli", "fixed-now").run_id == "fixed-now"
    assert client.get_run("cli", "spooled").run_id == "spooled"
    (left,) = list(letters.entries())
    assert left.run.run_id == "still-bad" and left.code == "INVALID_ARGUMENT"
    assert spool_cmd("purge").returncode == 0
    assert letters.count() == 0
    # The module form works too.
    mod = subprocess.run(
        [sys.executable, "-m", "neuralops.clients.spool", "status"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mod.returncode == 0 and "dead letters" in mod.stdout, mod.stderr


# -------------------------------------------------------------------- big runs


@only_postgres
def test_big_runs_from_8_threads_are_all_stored(runhistory: App, tmp_path: Path) -> None:
    # ~0.5 MB each here to keep the suite quick; the report runs the 1 MB drill.
    r = drills.big_runs_drill(runhistory.address("runhistory"), tmp_path / "client", mb=0.5)
    assert r.stored == r.submitted == 160
    assert r.batches >= 160 // 8  # at most ~8 runs of ~0.5 MB per 4 MiB batch
    assert r.stats["dead_lettered"] == 0


@one_backend
def test_a_40mb_run_does_not_hold_up_the_small_runs_after_it(
    runhistory: App, tmp_path: Path
) -> None:
    r = drills.huge_then_small_drill(runhistory.address("runhistory"), tmp_path / "client")
    assert r.small_stored == r.small_submitted
    if not r.huge_stored:
        ((run_id, code, message),) = r.dead
        assert (
            run_id.startswith("huge")
            and code == "RESOURCE_EXHAUSTED"
            and "larger than max" in message
        )


# ------------------------------------------------------------------- bad disks


@only_postgres
@pytest.mark.parametrize("read_only", [False, True], ids=["full", "read-only"])
def test_bad_spool_disk_during_an_outage_loses_nothing_within_the_memory_bound(
    config: Config, tmp_path: Path, read_only: bool
) -> None:
    with drills.small_filesystem(tmp_path / "fs", read_only=read_only) as fs:
        r = drills.bad_disk_drill(fs / "spool", tmp_path, config.postgres_dsn)
    assert r.stored == r.submitted == 600 and r.dropped == 0
    assert r.stats["held"] > 0  # the disk did refuse
    if not read_only:
        assert r.stats["spooled"] > 0  # ... after taking what fitted


@only_postgres
def test_past_the_memory_bound_drops_are_counted_and_logged(
    config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with drills.small_filesystem(tmp_path / "fs", read_only=True) as fs:
        r = drills.bad_disk_drill(
            fs / "spool", tmp_path, config.postgres_dsn, n=300, max_memory_bytes=20_000
        )
    assert r.dropped > 0
    assert r.stored + r.dropped == r.submitted  # every run is stored or counted as dropped
    assert "dropped" in caplog.text and "drop oldest" in caplog.text


@only_postgres
def test_log_run_never_raises_on_a_read_only_spool(config: Config, tmp_path: Path) -> None:
    with drills.small_filesystem(tmp_path / "fs", read_only=True) as fs:
        r = drills.bad_disk_drill(
            fs / "spool", tmp_path, config.postgres_dsn, n=10, use_log_run=True
        )
    assert r.log_run_errors == 0 and r.stored == 10


def test_log_run_raises_run_dropped_only_when_the_run_cannot_be_kept(tmp_path: Path) -> None:
    from neuralops.clients import RunDroppedError

    ro = tmp_path / "ro"
    with drills.small_filesystem(ro, read_only=True):
        address = f"localhost:{free_port()}"
        sender = sender_for(address, spool_dir=ro / "spool", max_memory_bytes=100)
        try:
            with pytest.raises(RunDroppedError):
                log_run(
                    {"wpk_id": "w", "run_id": "r", "outputs": {"t": "x" * 500}}, address=address
                )
            assert sender.stats()["dropped"] == 1
        finally:
            sender.close()


# ----------------------------------------------------------------- hung server


@only_postgres
def test_kill_9_while_the_server_hangs_loses_about_a_second(config: Config, tmp_path: Path) -> None:
    r = drills.hung_server_drill(tmp_path, config.postgres_dsn, rate=200, hang_s=2.0)
    assert r.submitted_during_hang > 200, "the client did not keep submitting"
    assert r.spooled_left == 0
    # The old sender lost every run of the hang; the bound is ~1 s (the deadline) plus
    # scheduling slack on a loaded machine.
    assert r.lost <= 2 * r.rate, r


# ------------------------------------------------------------ process handling


_IMPORTS_PROBE = """
import sys, threading
from pathlib import Path

imported = []
sys.addaudithook(
    lambda event, args: event == "import"
    and imported.append((threading.current_thread().name, args[0]))
)
from neuralops.clients.delivery import RunSender
from benchmarks.delivery import run_msg

sender = RunSender(sys.argv[1], spool_dir=Path(sys.argv[2]))
for i in range(5):
    sender.submit(run_msg("imports", f"r{i}"))
assert sender.flush(30)
from prometheus_client import REGISTRY

counted = REGISTRY.get_sample_value("neuralops_client_runs_total", {"outcome": "delivered"})
print(sender.delivered, counted, sorted({m for t, m in imported if t == "neuralops-sender"}))
"""


@one_backend
def test_the_worker_imports_nothing_while_the_application_runs(
    runhistory: App, tmp_path: Path
) -> None:
    # An import holds the GIL for its whole length: prometheus_client took ~60 ms on the
    # worker's first count, in the middle of the application's run. Everything the worker
    # needs is imported when the sender is made; its counts still reach Prometheus.
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE, runhistory.address("runhistory"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    assert out.stdout.split(None, 2) == ["5", "5.0", "[]\n"]


def test_fork_child_delivers_its_runs_or_keeps_them_in_the_spool(
    config: Config, tmp_path: Path
) -> None:
    # The server runs in its own process, as it does for an application that forks
    # workers: a gRPC server inside the forking process is not what is tested here
    # (gRPC does not support forking a process that serves, and its child crashed now
    # and then).
    server = ServerProcess(
        tmp_path / "srv", services="runhistory", postgres_dsn=config.postgres_dsn
    ).start()
    addr = server.address("runhistory")
    sender = RunSender(addr, spool_dir=tmp_path / "spool")
    try:
        sender.submit(run_msg("fork", "parent"))
        assert sender.flush(10)
        pid = os.fork()
        if pid == 0:  # child: the parent's worker thread does not exist here
            code = 1
            try:
                sender.submit(run_msg("fork", "child"))
                flushed = sender.flush(10)
                if flushed and sender.delivered == 1:
                    code = 0
                elif sender.spool.pending() >= 1:
                    # grpc may skip its fork handlers while other threads are inside it
                    # ("skipping fork() handlers"), leaving the child no working channel:
                    # the run must then be kept in the spool, not lost.
                    code = 2
                else:
                    code = 3
                sender.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) in (0, 2)
        if os.waitstatus_to_exitcode(status) == 2:
            sender.replay_now()
        wait_for(lambda: _stored(addr, "fork", "child"))
    finally:
        sender.close()
        server.stop()


def _stored(addr: str, wpk_id: str, run_id: str) -> bool:
    try:
        return RunHistoryClient(addr).get_run(wpk_id, run_id).run_id == run_id
    except NotFoundError:
        return False


def test_a_run_submitted_after_close_is_delivered_not_dropped(
    runhistory: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    addr = runhistory.address("runhistory")
    sender = RunSender(addr, spool_dir=tmp_path / "spool")
    sender.close()
    sender.submit(run_msg("late", "late-1"))
    assert RunHistoryClient(addr).get_run("late", "late-1").run_id == "late-1"
    assert "after close" in caplog.text
    dead = RunSender(f"localhost:{free_port()}", spool_dir=tmp_path / "spool2")
    dead.close()
    dead.submit(run_msg("late", "late-2"))
    assert dead.spool.pending() == 1


def test_sender_for_is_one_per_address_until_closed(tmp_path: Path) -> None:
    address = f"localhost:{free_port()}"
    a = sender_for(address, spool_dir=tmp_path / "spool")
    assert sender_for(address) is a
    a.close()
    b = sender_for(address, spool_dir=tmp_path / "spool")
    try:
        assert b is not a
        wait_for(lambda: b.stats()["queued_now"] == 0)
    finally:
        b.close()


# ------------------------------------------------------------------ batching


def test_encoded_runs_joined_are_the_batch_request() -> None:
    from neuralops.clients.batching import Encoded
    from neuralops.runhistory.v1 import runhistory_pb2 as pb

    runs = [run_msg("enc", f"r{i}") for i in range(3)]
    runs[1].node_logs.add(name="n" * 300)  # a length past one varint byte
    joined = b"".join(Encoded.of(r).payload for r in runs)
    assert joined == pb.BatchLogRunsRequest(runs=runs).SerializeToString()
    assert list(pb.BatchLogRunsRequest.FromString(joined).runs) == runs


@one_backend
def test_runs_linger_into_one_batch_and_flush_does_not_wait(
    runhistory: App, tmp_path: Path
) -> None:
    addr = runhistory.address("runhistory")
    sender = RunSender(addr, spool_dir=tmp_path / "spool", linger_s=30.0)
    try:
        for i in range(50):
            sender.submit(run_msg("linger", f"r{i}"))
        started = time.monotonic()
        assert sender.flush(10)
        assert time.monotonic() - started < 5, "flush waited for the linger"
        assert sender.delivered == 50
        assert sender.stats()["batches"] <= 2  # the first run may leave alone
        # Without a flush, a run is sent when the linger ends.
        quick = RunSender(addr, spool_dir=tmp_path / "spool2", linger_s=0.3)
        try:
            quick.submit(run_msg("linger", "alone"))
            wait_for(lambda: _stored(addr, "linger", "alone"), timeout=5)
        finally:
            quick.close()
    finally:
        sender.close()


@one_backend
def test_the_worker_steps_aside_for_a_busy_app_and_never_for_an_idle_one(
    runhistory: App, tmp_path: Path
) -> None:
    addr = runhistory.address("runhistory")
    sender = RunSender(addr, spool_dir=tmp_path / "spool", linger_s=0.05)
    try:
        # Idle application (waiting, as an agent waits on its model): delivered at once.
        sender.submit(run_msg("aside", "idle"))
        wait_for(lambda: sender.delivered == 1, timeout=5)
        # An application running Python flat out: the worker waits for it...
        for i in range(300):
            sender.submit(run_msg("aside", f"busy-{i}"))
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass
        assert sender.stats()["deferrals"] >= 1
        # ...and a flush delivers everything without waiting out the deferral.
        started = time.monotonic()
        assert sender.flush(10)
        assert time.monotonic() - started < 5
        assert sender.delivered == 301
    finally:
        sender.close()


@one_backend
def test_a_busy_thread_elsewhere_delays_runs_by_at_most_the_max_delay(
    runhistory: App, tmp_path: Path
) -> None:
    from neuralops.clients.delivery import MAX_DELAY_S

    addr = runhistory.address("runhistory")
    sender = RunSender(addr, spool_dir=tmp_path / "spool", linger_s=0.05)
    stop = threading.Event()

    def spin() -> None:  # some library's thread running Python flat out
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        started = time.monotonic()

        def build(i: int) -> Any:
            def record() -> Any:  # a record that takes a moment to build, as the hook's do
                until = time.perf_counter() + 0.0005
                while time.perf_counter() < until:
                    pass
                return run_msg("spun", f"r{i}")

            return record

        for i in range(20):  # an agent finishing a run every 0.1 s
            sender.submit(build(i))
            time.sleep(0.1)
        # Every run is stored while the spinner still spins, none later than
        # MAX_DELAY_S (plus slack for a loaded machine) after it was submitted.
        wait_for(lambda: sender.delivered == 20, timeout=MAX_DELAY_S + 4)
        assert time.monotonic() - started < 2 + MAX_DELAY_S + 4
        assert spinner.is_alive()
    finally:
        stop.set()
        spinner.join(5)
        sender.close()


@one_backend
def test_a_replay_stopped_part_way_starts_where_it_stopped(config: Config, tmp_path: Path) -> None:
    # A server that keeps failing part way through a big spool (a crash loop) must not
    # be sent the spool's first part again and again: the rest is spooled anew.
    from neuralops.clients.exporter import GrpcExporter

    server = ServerProcess(
        tmp_path / "srv", postgres_dsn=config.postgres_dsn, services="runhistory"
    )
    address = server.address("runhistory")

    class StopsTheServer:
        """The real exporter; the real server is stopped after its third batch."""

        def __init__(self) -> None:
            self.inner = GrpcExporter(address)
            self.batches = 0

        def export(self, batch: Any, timeout_s: float) -> None:
            self.inner.export(batch, timeout_s)
            self.batches += 1
            if self.batches == 3:
                server.stop(signal.SIGKILL)  # a crash: no graceful drain to wait for

        def reset(self) -> None:
            self.inner.reset()

    runs = [run_msg("crashloop", f"r-{i:04d}") for i in range(1000)]
    Spool(tmp_path / "spool").append(runs)  # an earlier process spooled them and died
    server.start()
    exporter = StopsTheServer()
    sender = RunSender(
        address, spool_dir=tmp_path / "spool", exporter=exporter, batch_size=100, retry_s=0.2
    )
    try:
        wait_for(lambda: exporter.batches == 3 and sender.stats().get("replayed") == 300, 30)
        wait_for(lambda: sender.spool.pending() == 700)  # the rest, spooled anew
        server.start()
        wait_for(lambda: sender.spool.pending() == 0, timeout=60)
        assert sender.delivered == 1000  # each run sent once: the first 300 not again
        client = RunHistoryClient(address)
        assert all(client.get_run("crashloop", r.run_id) for r in runs[::97])
    finally:
        sender.close()
        server.stop()
