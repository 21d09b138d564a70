"""A local spool of runs not yet delivered: framed records under ``<data dir>/spool``.

Each process appends to files of its own (``runs-<pid>-<n>-<tag>.spool``) and fsyncs
each write, so a spooled run survives the process being killed. Records are framed
(length + CRC32, :mod:`neuralops.clients.framing`): a torn or damaged record is
skipped on replay and the records around it are kept. Replay takes a process's own
finished files and any file whose writer process is gone, claiming each by an atomic
rename (``...spool.replaying-<pid>.<token>``), so two processes never replay the same
file. The token is this process's own: a claim left by an earlier process that had the
same pid (a container's PID 1 restarted) is taken over, not mistaken for a live one.
Replays are safe to repeat: the server is idempotent on (wpk_id, run_id).

The spool has a size cap (``max_bytes``). Past it the policy is **drop oldest**:
whole files, oldest first, are deleted until the new records fit; every run dropped
so is counted by the caller and logged.

Command line (client install only): ``python -m neuralops.clients.spool status|retry|purge``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError
from neuralops.clients.framing import ReadStats, append_records, read_records
from neuralops.runhistory.v1 import runhistory_pb2 as pb

log = logging.getLogger(__name__)

SUFFIX = ".spool"
CLAIMED = ".replaying-"
DEFAULT_MAX_BYTES = 1 << 30


def data_dir() -> Path:
    return Path(os.environ.get("NEURALOPS_DATA_DIR", "").strip() or ".neuralops")


def default_dir() -> Path:
    return data_dir() / "spool"


# This process's claim token: a pid alone cannot tell this process from an earlier one
# with the same pid (PID 1 in a restarted container).
_token = uuid.uuid4().hex[:8]


def _new_token() -> None:
    global _token
    _token = uuid.uuid4().hex[:8]


os.register_at_fork(after_in_child=_new_token)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_pid(name: str) -> int:
    try:
        return int(name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _claimer_pid(name: str) -> int:
    pid = name.rsplit(CLAIMED, 1)[-1].split(".", 1)[0]
    return int(pid) if pid.isdigit() else -1


def _claimed_by_live(name: str) -> bool:
    """Whether a claimed file's claimer still runs: another live pid, or this very
    process (its token; a claim without one, or with another, under this pid was made
    by an earlier process that had the same pid)."""
    pid = _claimer_pid(name)
    if pid != os.getpid():
        return _alive(pid)
    return name.rsplit(CLAIMED, 1)[-1] == f"{pid}.{_token}"


def decode_runs(path: Path, stats: ReadStats | None = None) -> Iterator[pb.Run]:
    """The runs of one framed file; undecodable records are skipped and counted."""
    stats = stats if stats is not None else ReadStats()
    for payload in read_records(path, stats):
        run = pb.Run()
        try:
            run.ParseFromString(payload)
        except DecodeError:
            stats.skipped += 1
            continue
        yield run
    if stats.skipped:
        log.error(
            "neuralops: skipped %d damaged record(s) (%d bytes) in %s",
            stats.skipped,
            stats.skipped_bytes,
            path,
        )


@dataclass(frozen=True)
class SpoolStatus:
    directory: Path
    files: int
    runs: int
    bytes: int
    damaged: int


class Spool:
    def __init__(self, directory: Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = directory or default_dir()
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._seq = 0
        self._size: int | None = None  # bytes on disk, learnt lazily
        self.unclaimable = 0  # files the last claim could not rename (disk refused)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and never append to the parent's file."""
        self._lock = threading.Lock()
        self._file = None
        self._size = None

    # ----------------------------------------------------------------- writes

    def append(self, runs: list[pb.Run]) -> int:
        """Durably add runs (written and fsynced before this returns). Raises OSError
        when the disk refuses (full, read-only, no permission). Returns how many older
        runs the size cap made it drop."""
        if not runs:
            return 0
        payloads = [r.SerializeToString() for r in runs]
        need = sum(len(p) for p in payloads)
        with self._lock:
            dropped = self._make_room_locked(need)
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._seq += 1
                tag = uuid.uuid4().hex[:8]
                self._file = self.directory / f"runs-{os.getpid()}-{self._seq}-{tag}{SUFFIX}"
            written = append_records(self._file, payloads)
            if self._size is not None:
                self._size += written
            return dropped

    def _disk_bytes_locked(self) -> int:
        if self._size is None:
            total = 0
            if self.directory.exists():
                for path in self.directory.iterdir():
                    with contextlib.suppress(OSError):
                        total += path.stat().st_size
            self._size = total
        return self._size

    def _make_room_locked(self, need: int) -> int:
        if self._disk_bytes_locked() + need <= self.max_bytes:
            return 0
        self._size = None  # recount: other processes write here too
        dropped = 0
        for path in self._oldest_first_locked():
            if self._disk_bytes_locked() + need <= self.max_bytes:
                break
            n = sum(1 for _ in decode_runs(path))
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            if path == self._file:
                self._file = None
            dropped += n
            self._size = None
            log.error(
                "neuralops: spool over its cap of %d bytes: dropped %d oldest run(s) (%s)",
                self.max_bytes,
                n,
                path.name,
            )
        return dropped

    def _oldest_first_locked(self) -> list[Path]:
        if not self.directory.exists():
            return []
        files = []
        for path in self.directory.iterdir():
            name = path.name
            if SUFFIX not in name:
                continue
            owner = _claimer_pid(name) if CLAIMED in name else _writer_pid(name)
            if owner != os.getpid() and _alive(owner):
                continue  # another live process's file is its to manage
            with contextlib.suppress(OSError):
                files.append((path.stat().st_mtime, path))
        return [p for _, p in sorted(files)]

    # ------------------------------------------------------------------ reads

    def status(self) -> SpoolStatus:
        """Files, runs and bytes waiting (any writer), and damaged records seen."""
        with self._lock:
            files = runs = size = damaged = 0
            if self.directory.exists():
                for path in self.directory.iterdir():
                    if SUFFIX not in path.name:
                        continue
                    stats = ReadStats()
                    with contextlib.suppress(OSError):
                        runs += sum(1 for _ in decode_runs(path, stats))
                        size += path.stat().st_size
                        files += 1
                    damaged += stats.skipped
            return SpoolStatus(self.directory, files, runs, size, damaged)

    def pending(self) -> int:
        """Runs waiting in the spool (all files, any writer). Taken under the lock that
        claims take, so a file being renamed by this process is never missed."""
        return self.status().runs

    def claim(self) -> list[Path]:
        """Files to replay now, renamed so no other process takes them."""
        with self._lock:
            self._file = None  # later appends start a new file
            return self._claim_locked()

    def _claim_locked(self) -> list[Path]:
        if not self.directory.exists():
            return []
        claimed: list[Path] = []
        self.unclaimable = 0
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if name.endswith(SUFFIX):
                owner = _writer_pid(name)
                if owner != os.getpid() and _alive(owner):
                    continue  # another live process still writes it
            elif SUFFIX + CLAIMED in name:
                if _claimed_by_live(name):
                    continue
            else:
                continue
            base = name.split(SUFFIX)[0] + SUFFIX
            target = path.with_name(f"{base}{CLAIMED}{os.getpid()}.{_token}")
            try:
                os.replace(path, target)
            except FileNotFoundError:  # another process claimed it first
                continue
            except OSError as exc:  # read-only or no permission: tried again later
                self.unclaimable += 1
                log.debug("neuralops: cannot claim spool file %s: %s", path, exc)
                continue
            claimed.append(target)
        return claimed

    @staticmethod
    def read(path: Path, stats: ReadStats | None = None) -> Iterator[pb.Run]:
        return decode_runs(path, stats)

    def done(self, path: Path) -> None:
        with self._lock:
            self._size = None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def release(self, path: Path) -> None:
        """Give a claimed file back (replay failed): it becomes replayable again."""
        base = path.name.split(SUFFIX)[0] + SUFFIX
        with self._lock, contextlib.suppress(OSError):
            os.replace(path, path.with_name(base))

    def purge(self) -> int:
        """Delete every spooled run not claimed by a live process; how many."""
        n = 0
        with self._lock:
            for path in self._claim_locked():
                n += sum(1 for _ in decode_runs(path))
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._size = None
        return n


if __name__ == "__main__":
    from neuralops.clients.spool_cli import main

    sys.exit(main())
