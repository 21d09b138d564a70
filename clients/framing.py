"""Length + checksum framing for the spool and the dead-letter store.

A record on disk is ``MAGIC | length (u32 BE) | crc32 (u32 BE) | payload``. A reader
checks the checksum of every record; when a record is torn (the process died or the
disk filled mid-write) or damaged, it scans forward to the next ``MAGIC`` and goes on,
so one bad record never hides the records written after it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\xd3NR1"
_HEADER = struct.Struct(">4sII")
HEADER_BYTES = _HEADER.size
# A payload longer than this is taken for a damaged length field.
MAX_RECORD_BYTES = 1 << 30


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass
class ReadStats:
    """What reading one file found: records returned, and damaged stretches skipped."""

    records: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    errors: list[str] = field(default_factory=list)


def read_records(path: Path, stats: ReadStats | None = None) -> Iterator[bytes]:
    """Every intact record of ``path``, in order; damaged stretches are skipped (and
    counted in ``stats``)."""
    stats = stats if stats is not None else ReadStats()
    data = path.read_bytes()
    pos, end = 0, len(data)
    while pos < end:
        ok = False
        if data.startswith(MAGIC, pos) and pos + HEADER_BYTES <= end:
            _, length, crc = _HEADER.unpack_from(data, pos)
            start = pos + HEADER_BYTES
            if length <= MAX_RECORD_BYTES and start + length <= end:
                payload = data[start : start + length]
                if zlib.crc32(payload) == crc:
                    ok = True
                    stats.records += 1
                    yield payload
                    pos = start + length
        if not ok:
            nxt = data.find(MAGIC, pos + 1)
            nxt = end if nxt < 0 else nxt
            stats.skipped += 1
            stats.skipped_bytes += nxt - pos
            pos = nxt


def append_records(path: Path, payloads: list[bytes]) -> int:
    """Append framed records and fsync before returning; the bytes written.

    On any error the file is cut back to its size before the call (best effort), so
    a failed write leaves no half record for the reader to skip."""
    blob = b"".join(frame(p) for p in payloads)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        before = os.fstat(fd).st_size
        try:
            view = memoryview(blob)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # the reader's framing copes with a torn tail
                os.ftruncate(fd, before)
            raise
    finally:
        os.close(fd)
    return len(blob)
