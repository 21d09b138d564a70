"""Dead letters: runs the server refused for good, kept with its status and message.

A run lands here only when it was sent alone and the server (or gRPC) answered with a
permanent failure (see :mod:`neuralops.clients.exporter`). It is never retried
automatically: ``neuralops spool retry`` (or ``python -m neuralops.clients.spool
retry``) sends it again, e.g. after a server fix; ``purge`` deletes it.

Each dead letter is one small file under ``<data dir>/deadletter`` (they are rare),
written with the spool's framing and fsynced: ``header (JSON) | run (protobuf)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError
from neuralops.clients.framing import append_records, read_records
from neuralops.runhistory.v1 import runhistory_pb2 as pb

log = logging.getLogger(__name__)

SUFFIX = ".dead"
_LEN = struct.Struct(">I")
# Never store more than this much of the server's message (it may echo input).
MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class DeadLetter:
    path: Path
    run: pb.Run
    code: str
    message: str
    at: float  # epoch seconds

    @property
    def key(self) -> str:
        return f"{self.run.wpk_id}/{self.run.run_id}"


def _encode(run: pb.Run, code: str, message: str, at: float) -> bytes:
    head = json.dumps({"code": code, "message": message[:MAX_MESSAGE_CHARS], "at": at}).encode()
    return _LEN.pack(len(head)) + head + run.SerializeToString()


def _decode(path: Path, payload: bytes) -> DeadLetter:
    (n,) = _LEN.unpack_from(payload)
    head = json.loads(payload[_LEN.size : _LEN.size + n])
    run = pb.Run()
    run.ParseFromString(payload[_LEN.size + n :])
    return DeadLetter(path, run, str(head["code"]), str(head["message"]), float(head["at"]))


class DeadLetters:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's worker may have held it)."""
        self._lock = threading.Lock()

    def add(self, run: pb.Run, code: str, message: str) -> Path:
        """Store one refused run durably (raises OSError if the disk refuses)."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"dead-{time.time_ns()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
            append_records(path, [_encode(run, code, message, time.time())])
            return path

    def entries(self) -> Iterator[DeadLetter]:
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                for payload in read_records(path):
                    yield _decode(path, payload)
            except (OSError, ValueError, KeyError, DecodeError, struct.error) as exc:
                log.error("neuralops: unreadable dead letter %s: %s", path, exc)

    def count(self) -> int:
        return sum(1 for _ in self.entries())

    def remove(self, letter: DeadLetter) -> None:
        with contextlib.suppress(FileNotFoundError):
            letter.path.unlink()

    def retry(self, send: Callable[[pb.Run], tuple[str, str] | None]) -> tuple[int, int]:
        """Send each dead letter again with ``send`` (None when stored, else the new
        (code, message)); stored ones are removed, the others keep the newest reason.
        Returns (stored, still refused)."""
        stored = refused = 0
        for letter in list(self.entries()):
            outcome = send(letter.run)
            if outcome is None:
                self.remove(letter)
                stored += 1
                continue
            refused += 1
            code, message = outcome
            if (code, message) != (letter.code, letter.message):
                self.add(letter.run, code, message)
                self.remove(letter)
        return stored, refused

    def purge(self) -> int:
        n = 0
        if self.directory.exists():
            for path in self.directory.glob(f"*{SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    n += 1
        return n
