"""``spool status|retry|purge``: look at and act on runs not yet delivered.

Works with the client install alone: ``python -m neuralops.clients.spool status``;
the server install also has it as ``neuralops spool status``.

- ``status``: runs waiting in the spool, damaged records, and every dead letter
  (run, status code, the server's message, when);
- ``retry``: replay the spool now and send every dead letter again (stored ones
  leave the store; the others stay with the newest reason);
- ``purge``: delete the dead letters (``--spool`` also deletes the spooled runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from neuralops.clients.batching import Encoded
from neuralops.clients.deadletter import DeadLetters
from neuralops.clients.exporter import ExportError, GrpcExporter
from neuralops.clients.runhistory import default_address
from neuralops.clients.spool import Spool, data_dir
from neuralops.runhistory.v1 import runhistory_pb2 as pb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=["status", "retry", "purge"], help="what to do (see the help above)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the client's data directory (default: NEURALOPS_DATA_DIR, else .neuralops)",
    )
    parser.add_argument(
        "--address", default=None, help="RunHistory address (default: NEURALOPS_RUNHISTORY_ADDR)"
    )
    parser.add_argument("--json", action="store_true", help="status as one JSON object")
    parser.add_argument("--spool", action="store_true", help="purge: also delete spooled runs")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC on retry")


def _status(base: Path) -> dict[str, object]:
    spool = Spool(base / "spool").status()
    letters = [
        {
            "wpk_id": d.run.wpk_id,
            "run_id": d.run.run_id,
            "code": d.code,
            "message": d.message,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.at)),
        }
        for d in DeadLetters(base / "deadletter").entries()
    ]
    return {
        "data_dir": str(base),
        "spool": {
            "files": spool.files,
            "runs": spool.runs,
            "bytes": spool.bytes,
            "damaged_records": spool.damaged,
        },
        "dead_letters": letters,
    }


def run(args: argparse.Namespace) -> int:
    base: Path = args.data_dir or data_dir()
    address = args.address or default_address()
    if args.action == "status":
        st = _status(base)
        if args.json:
            print(json.dumps(st))
            return 0
        sp = st["spool"]
        assert isinstance(sp, dict)
        print(
            f"spool {base / 'spool'}: {sp['runs']} run(s) in {sp['files']} file(s), "
            f"{sp['bytes']} bytes, {sp['damaged_records']} damaged record(s)"
        )
        letters = st["dead_letters"]
        assert isinstance(letters, list)
        print(f"dead letters {base / 'deadletter'}: {len(letters)}")
        for d in letters:
            print(f"  {d['wpk_id']}/{d['run_id']}  {d['code']}  {d['at']}  {d['message'][:200]}")
        return 0
    if args.action == "retry":
        from neuralops.clients.delivery import RunSender

        sender = RunSender(address, spool_dir=base / "spool", timeout_s=args.timeout)
        try:
            before = sender.spool.pending()
            sender.replay_now()
            after = sender.spool.pending()
        finally:
            sender.close()
        exporter = GrpcExporter(address)

        def send(run: pb.Run) -> tuple[str, str] | None:
            try:
                exporter.export([Encoded.of(run)], args.timeout)
            except ExportError as err:
                return err.code.name, err.message
            return None

        stored, refused = DeadLetters(base / "deadletter").retry(send)
        print(f"spool: {before - after} run(s) replayed, {after} still waiting")
        print(f"dead letters: {stored} stored, {refused} still refused")
        return 0 if refused == 0 and after == 0 else 1
    purged = DeadLetters(base / "deadletter").purge()
    print(f"dead letters purged: {purged}")
    if args.spool:
        print(f"spooled runs purged: {Spool(base / 'spool').purge()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuralops.clients.spool", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
