"""Delivery drills (issue 9): poison runs, big runs, bad disks, a hung server.

Each drill runs real servers (``neuralops serve`` child processes, or the caller's
in-process App) and returns what it measured; tests/test_delivery.py asserts on the
same drills, and ``python -m benchmarks.delivery`` writes reports/delivery.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from neuralops.clients import NotFoundError, RunHistoryClient, UnavailableError
from neuralops.clients.delivery import MIB, RunSender
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.tooling.processes import ServerProcess, free_port

from benchmarks.common import Section, machine


def run_msg(wpk_id: str, run_id: str, text: str = "ok", blob_bytes: int = 0) -> pb.Run:
    run = pb.Run(wpk_id=wpk_id, run_id=run_id, status=pb.RUN_STATUS_COMPLETED)
    run.outputs.update({"text": text})
    if blob_bytes:
        run.outputs.update({"blob": "x" * blob_bytes})
    return run


def stored(address: str, wpk_id: str, run_ids: list[str]) -> set[str]:
    """The ids among ``run_ids`` that RunHistory has (GetRun each)."""
    client = RunHistoryClient(address)
    found = set()
    for rid in run_ids:
        for attempt in range(20):  # a channel still in reconnect backoff answers UNAVAILABLE
            try:
                client.get_run(wpk_id, rid)
                found.add(rid)
            except NotFoundError:
                pass
            except UnavailableError:
                if attempt == 19:
                    raise
                time.sleep(0.25)
                continue
            break
    return found


def wait_until(check: object, timeout_s: float) -> float | None:
    """Seconds until ``check()`` is true, or None after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.05)
    return None


# ----------------------------------------------------------------- poison run


@dataclass
class PoisonResult:
    submitted: int
    stored: int
    dead: list[tuple[str, str, str]]  # run_id, code, message
    spool_empty_s: float | None
    stats: dict[str, int]


def poison_drill(address: str, client_dir: Path, n: int = 1000, bad: int = 20) -> PoisonResult:
    """``n`` runs, run ``bad`` with a NUL character in its output text."""
    sender = RunSender(address, spool_dir=client_dir / "spool", retry_s=0.2)
    tag = uuid.uuid4().hex[:8]
    ids = [f"poison-{tag}-{i:05d}" for i in range(n)]
    start = time.monotonic()
    try:
        for i, rid in enumerate(ids):
            sender.submit(run_msg("drill", rid, "bad\u0000text" if i == bad else "ok"))
        sender.flush(60)
        waited = wait_until(lambda: sender.spool.pending() == 0, 30)
        empty_s = None if waited is None else time.monotonic() - start
        dead = [(d.run.run_id, d.code, d.message) for d in sender.dead_letters.entries()]
        return PoisonResult(n, len(stored(address, "drill", ids)), dead, empty_s, sender.stats())
    finally:
        sender.close()


# ------------------------------------------------------------------- big runs


@dataclass
class BigRunsResult:
    submitted: int
    stored: int
    batches: int
    seconds: float
    stats: dict[str, int]


def big_runs_drill(
    address: str, client_dir: Path, threads: int = 8, per_thread: int = 20, mb: float = 1.0
) -> BigRunsResult:
    sender = RunSender(address, spool_dir=client_dir / "spool", retry_s=0.2, timeout_s=5)
    tag = uuid.uuid4().hex[:8]
    ids = [f"big-{tag}-{t}-{i}" for t in range(threads) for i in range(per_thread)]
    size = int(mb * MIB)

    def work(t: int) -> None:
        for i in range(per_thread):
            sender.submit(run_msg("drill", f"big-{tag}-{t}-{i}", blob_bytes=size))

    start = time.monotonic()
    try:
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        sender.flush(120)
        wait_until(lambda: sender.spool.pending() == 0, 60)
        seconds = time.monotonic() - start
        got = len(stored(address, "drill", ids))
        return BigRunsResult(len(ids), got, sender.stats()["batches"], seconds, sender.stats())
    finally:
        sender.close()


@dataclass
class HugeResult:
    huge_stored: bool
    dead: list[tuple[str, str, str]]
    small_stored: int
    small_submitted: int
    small_s: float | None  # from the huge run's submit until every small run is stored


def huge_then_small_drill(
    address: str, client_dir: Path, huge_mb: int = 40, small: int = 20
) -> HugeResult:
    sender = RunSender(address, spool_dir=client_dir / "spool", retry_s=0.2)
    tag = uuid.uuid4().hex[:8]
    ids = [f"after-huge-{tag}-{i}" for i in range(small)]
    try:
        start = time.monotonic()
        sender.submit(run_msg("drill", f"huge-{tag}", blob_bytes=huge_mb * MIB))
        for rid in ids:
            sender.submit(run_msg("drill", rid))
        waited = wait_until(lambda: len(stored(address, "drill", ids)) == small, 30)
        small_s = None if waited is None else time.monotonic() - start
        sender.flush(30)
        dead = [(d.run.run_id, d.code, d.message) for d in sender.dead_letters.entries()]
        return HugeResult(
            bool(stored(address, "drill", [f"huge-{tag}"])),
            dead,
            len(stored(address, "drill", ids)),
            small,
            small_s,
        )
    finally:
        sender.close()


# ----------------------------------------------------------------- bad disks


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int = 256, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size_kb`` mounted at ``path`` (needs root, as CI runs)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@dataclass
class DiskResult:
    submitted: int
    stored: int
    dropped: int
    stats: dict[str, int] = field(default_factory=dict)
    log_run_errors: int = 0


def bad_disk_drill(
    spool_dir: Path,
    tmp: Path,
    postgres_dsn: str | None,
    *,
    n: int = 600,
    max_memory_bytes: int = 64 * MIB,
    use_log_run: bool = False,
) -> DiskResult:
    """An outage while the spool's disk refuses writes, then the server comes back
    (an in-process RunHistory on the port the client was given)."""
    from neuralops.clients import RunDroppedError, log_run
    from neuralops.clients.delivery import sender_for
    from neuralops.servers.runtime.app import App
    from neuralops.servers.runtime.config import Config

    port = free_port()
    address = f"localhost:{port}"
    # The process-wide sender for this address, so log_run uses the same one.
    sender = sender_for(
        address,
        spool_dir=spool_dir,
        dead_letter_dir=tmp / "deadletter",
        retry_s=0.2,
        max_retry_s=0.5,
        max_memory_bytes=max_memory_bytes,
    )
    ids = [f"disk-{uuid.uuid4().hex[:8]}-{i:05d}" for i in range(n)]
    errors = 0
    try:
        for rid in ids:
            if use_log_run:
                try:
                    log_run(
                        {
                            "wpk_id": "drill",
                            "run_id": rid,
                            "status": "completed",
                            "outputs": {"text": "y" * 600},
                        },
                        address=address,
                        timeout_s=0.5,
                    )
                except RunDroppedError:
                    errors += 1
            else:
                sender.submit(run_msg("drill", rid, text="y" * 600))
        sender.flush(60)
        config = Config(postgres_dsn=postgres_dsn, data_dir=tmp / "srv", metrics_port=0)
        server = App(config, services=("runhistory",), ports={"runhistory": port}).start()
        try:
            wait_until(lambda: sender.stats()["held_now"] == 0 and sender.spool.pending() == 0, 60)
            sender.flush(30)
            got = len(stored(address, "drill", ids))
        finally:
            server.stop(grace=1)
        st = sender.stats()
        return DiskResult(n, got, st["dropped"], st, errors)
    finally:
        sender.close()


# ------------------------------------------------------------ hung server


@dataclass
class HungResult:
    rate: int
    submitted: int
    submitted_during_hang: int
    stored: int
    spooled_left: int
    lost: int
    hang_s: float

    @property
    def lost_seconds(self) -> float:
        return self.lost / self.rate


CLIENT = """
import sys, time
from neuralops.clients.delivery import RunSender
from neuralops.runhistory.v1 import runhistory_pb2 as pb
addr, spool, rate, tag = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
sender = RunSender(addr, spool_dir=__import__("pathlib").Path(spool))
start = time.monotonic()
i = 0
while True:
    run = pb.Run(wpk_id="drill", run_id=f"hung-{tag}-{i:06d}", status=pb.RUN_STATUS_COMPLETED)
    sender.submit(run)
    print(i, flush=True)
    i += 1
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


def hung_server_drill(
    tmp: Path, postgres_dsn: str | None, rate: int = 200, before_s: float = 1.0, hang_s: float = 3.0
) -> HungResult:
    """Server SIGSTOPped while a client submits ``rate`` runs/s; the client is killed
    with SIGKILL ``hang_s`` later; then the server resumes and the spool is replayed."""
    server = ServerProcess(tmp / "srv", postgres_dsn=postgres_dsn, services="runhistory").start()
    address = server.address("runhistory")
    spool = tmp / "client-spool"
    tag = uuid.uuid4().hex[:8]
    assert server.proc is not None
    client = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CLIENT), address, str(spool), str(rate), tag],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(client.stdout or []), daemon=True)
    reader.start()
    try:
        # Runs flow to a live server for ``before_s`` once the client has started.
        wait_until(lambda: len(lines) >= before_s * rate, 60)
        os.kill(server.proc.pid, signal.SIGSTOP)
        at_stop = len(lines)
        time.sleep(hang_s)
        client.kill()
        client.wait()
        reader.join(5)
        submitted = len(lines)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.proc.pid, signal.SIGCONT)
    try:
        ids = [f"hung-{tag}-{i:06d}" for i in range(submitted)]
        replayer = RunSender(address, spool_dir=spool, dead_letter_dir=tmp / "dl", timeout_s=5)
        try:
            replayer.flush(1)
            replayer.replay_now()
            left = replayer.spool.pending()
        finally:
            replayer.close()
        got = len(stored(address, "drill", ids))
    finally:
        server.stop()
    return HungResult(rate, submitted, submitted - at_stop, got, left, submitted - got, hang_s)


# -------------------------------------------------------------------- report


def run(section: Section, dsn: str) -> None:
    from neuralops.servers.runtime.db import scratch_schema

    with scratch_schema(dsn, "nops_dlv") as schema_dsn, tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        server = ServerProcess(tmp / "srv", postgres_dsn=schema_dsn, services="runhistory").start()
        addr = server.address("runhistory")
        try:
            p = poison_drill(addr, tmp / "c1")
            section.add(
                "1,000 runs, one with a NUL character (Postgres)",
                f"{p.stored} stored, {len(p.dead)} dead-lettered "
                f"({', '.join(f'{c}: {m[:60]}' for _, c, m in p.dead) or '-'}); spool empty after "
                f"{p.spool_empty_s:.1f} s"
                if p.spool_empty_s is not None
                else "spool NOT empty",
            )
            b = big_runs_drill(addr, tmp / "c2")
            section.add(
                "160 runs of ~1 MB from 8 threads",
                f"{b.stored} of {b.submitted} stored in {b.batches} BatchLogRuns calls, "
                f"{b.seconds:.1f} s",
            )
            h = huge_then_small_drill(addr, tmp / "c3")
            section.add(
                "one 40 MB run, then 20 small runs",
                f"40 MB run {'stored' if h.huge_stored else 'dead-lettered: ' + (h.dead[0][1] + ' ' + h.dead[0][2][:60] if h.dead else '?')}; "
                f"{h.small_stored} of {h.small_submitted} small runs stored "
                + (f"{h.small_s:.1f} s after the big one was submitted" if h.small_s else "(late)"),
            )
        finally:
            server.stop()
        if os.geteuid() == 0:
            for ro in (False, True):
                with small_filesystem(tmp / f"fs{ro}", read_only=ro) as fs:
                    d = bad_disk_drill(fs / "spool", tmp / f"d{ro}", schema_dsn)
                name = "read-only" if ro else "256 KB (full)"
                section.add(
                    f"{d.submitted} runs of ~0.6 KB during an outage, spool on a {name} tmpfs",
                    f"{d.stored} stored after the server came back, {d.dropped} dropped "
                    f"(spooled {d.stats['spooled']}, held in memory {d.stats['held']})",
                )
            with small_filesystem(tmp / "fsover") as fs:
                d = bad_disk_drill(
                    fs / "spool", tmp / "dover", schema_dsn, max_memory_bytes=64 * 1024
                )
            section.add(
                "same on the full tmpfs, memory bound 64 KB",
                f"{d.stored} stored, {d.dropped} dropped and counted (policy: drop oldest)",
            )
        else:
            section.add("bad-disk drills", "not run: mounting a tmpfs needs root")
        hs = [hung_server_drill(tmp / f"h{i}", schema_dsn) for i in range(3)]
        for i, r in enumerate(hs):
            section.add(
                f"hung server (SIGSTOP), client SIGKILLed {r.hang_s:.0f} s later, run {i + 1}",
                f"{r.submitted} submitted at {r.rate}/s ({r.submitted_during_hang} during the hang), "
                f"{r.stored} stored after SIGCONT + replay, lost {r.lost} = {r.lost_seconds:.2f} s of runs",
            )
    section.notes.append(
        "Drills in benchmarks/delivery.py (the tests in tests/test_delivery.py run the same "
        "functions). Servers are `neuralops serve --services runhistory` child processes on "
        "Postgres; bad disks are real tmpfs mounts (256 KB, and remounted read-only); the hung "
        "server is SIGSTOPped while a client process submits at 200 runs/s."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="reports/delivery.md")
    args = parser.parse_args(argv)
    dsn = os.environ.get("POSTGRES_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
    section = Section("Delivery drills (issue 9)", "python -m benchmarks.delivery")
    started = time.perf_counter()
    run(section, dsn)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Delivery drills\n\n"
        f"Regenerated by `python -m benchmarks.delivery` on {datetime.now(UTC):%Y-%m-%d %H:%M} "
        f"UTC, {machine()}; took {time.perf_counter() - started:.0f} s. Figures are from this "
        "run, not typed by hand.\n\n" + section.markdown()
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
