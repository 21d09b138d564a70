"""A local spool of runs not yet delivered: JSON lines under ``<data dir>/spool``.

Each process appends to files of its own (``runs-<pid>-<n>.jsonl``) and fsyncs each
write, so a spooled run survives the process being killed. Replay takes a process's
own finished files and any file whose writer process is gone, claiming each by an
atomic rename, so two processes never replay the same file. Replays are safe to
repeat: the server is idempotent on (wpk_id, run_id).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import json_format
from neuralops.runhistory.v1 import runhistory_pb2 as pb

log = logging.getLogger(__name__)


def default_dir() -> Path:
    return Path(os.environ.get("NEURALOPS_DATA_DIR", "").strip() or ".neuralops") / "spool"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(path: Path) -> int:
    try:
        return int(path.name.split("-")[1])
    except (IndexError, ValueError):
        return -1


class Spool:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_dir()
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._seq = 0

    def append(self, runs: list[pb.Run]) -> None:
        """Durably add runs (written and fsynced before this returns)."""
        if not runs:
            return
        lines = "".join(json_format.MessageToJson(r, indent=None) + "\n" for r in runs)
        with self._lock:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._seq += 1
                self._file = (
                    self.directory / f"runs-{os.getpid()}-{self._seq}-{uuid.uuid4().hex[:8]}.jsonl"
                )
            with open(self._file, "a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())

    def pending(self) -> int:
        """Runs waiting in the spool (all files, any writer). Taken under the lock that
        claims take, so a file being renamed by this process is never missed."""
        with self._lock:
            if not self.directory.exists():
                return 0
            n = 0
            for path in self.directory.glob("*.jsonl*"):
                with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
                    n += sum(1 for line in f if line.strip())
            return n

    def claim(self) -> list[Path]:
        """Files to replay now, renamed so no other process takes them."""
        with self._lock:
            self._file = None  # later appends start a new file
            return self._claim_locked()

    def _claim_locked(self) -> list[Path]:
        if not self.directory.exists():
            return []
        claimed: list[Path] = []
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if name.endswith(".jsonl"):
                owner = _pid_of(path)
                if owner != os.getpid() and _alive(owner):
                    continue  # another live process still writes it
            elif ".jsonl.replaying-" in name:
                owner = int(name.rsplit("-", 1)[1]) if name.rsplit("-", 1)[1].isdigit() else -1
                if _alive(owner):
                    continue
            else:
                continue
            base = name.split(".jsonl")[0] + ".jsonl"
            target = path.with_name(f"{base}.replaying-{os.getpid()}")
            try:
                os.replace(path, target)
            except OSError:
                continue
            claimed.append(target)
        return claimed

    @staticmethod
    def read(path: Path) -> Iterator[pb.Run]:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        yield json_format.Parse(line, pb.Run())
                    except json_format.ParseError:
                        log.error("skipping an unreadable spool line in %s", path)

    @staticmethod
    def done(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def release(self, path: Path) -> None:
        """Give a claimed file back (replay failed): it becomes replayable again."""
        base = path.name.split(".jsonl")[0] + ".jsonl"
        with self._lock, contextlib.suppress(OSError):
            os.replace(path, path.with_name(base))
