"""The spool on its own: durable appends, claims that other processes respect, releases."""

from __future__ import annotations

import os
from pathlib import Path

from neuralops.clients.delivery import RunSender
from neuralops.clients.spool import Spool
from neuralops.runhistory.v1 import runhistory_pb2 as pb

from tests.conftest import free_port


def _runs(prefix: str, n: int) -> list[pb.Run]:
    return [
        pb.Run(wpk_id="w", run_id=f"{prefix}{i}", status=pb.RUN_STATUS_COMPLETED) for i in range(n)
    ]


def test_appended_runs_read_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_runs("a", 3))
    spool.append(_runs("b", 2))
    assert spool.pending() == 5
    (path,) = spool.claim()
    assert [r.run_id for r in Spool.read(path)] == ["a0", "a1", "a2", "b0", "b1"]


def test_a_live_writers_file_is_not_claimed_but_a_dead_ones_is(tmp_path: Path) -> None:
    live = tmp_path / f"runs-{os.getppid()}-1-x.spool"  # our parent: alive, not us
    dead = tmp_path / "runs-999999999-1-y.spool"
    for p in (live, dead):
        p.write_text("")
    claimed = Spool(tmp_path).claim()
    (name,) = [p.name for p in claimed]
    assert name.startswith(f"runs-999999999-1-y.spool.replaying-{os.getpid()}.")
    assert live.exists()


def test_failed_replay_gives_every_claimed_file_back(tmp_path: Path) -> None:
    sender = RunSender(f"localhost:{free_port()}", spool_dir=tmp_path, timeout_s=1)
    try:
        sender.keep(_runs("a", 2))
        sender.spool.claim()  # rotate: the next runs go to a second file
        for p in tmp_path.glob("*.replaying-*"):
            sender.spool.release(p)
        sender.keep(_runs("b", 2))
        assert len(list(tmp_path.glob("*.spool"))) == 2
        sender.replay_now()  # the service is down: nothing delivered
        assert sorted(p.suffix for p in tmp_path.iterdir()) == [".spool", ".spool"]
        assert sender.spool.pending() == 4
    finally:
        sender.close()


def test_a_claim_left_by_an_earlier_process_with_this_pid_is_taken_back(tmp_path: Path) -> None:
    # A restarted container's app is PID 1 again: a replay its previous life was making
    # when it was killed must not look like this process's own claim in progress.
    pid = os.getpid()
    stale = tmp_path / f"runs-{pid}-1-a.spool.replaying-{pid}.0badc0de"
    older = tmp_path / f"runs-{pid}-2-b.spool.replaying-{pid}"  # before claims had tokens
    other = tmp_path / f"runs-1-3-c.spool.replaying-{os.getppid()}.12345678"  # a live one
    for p in (stale, older, other):
        p.write_text("")
    spool = Spool(tmp_path)
    claimed = sorted(p.name for p in spool.claim())
    assert [n.split(".replaying-")[0] for n in claimed] == [
        f"runs-{pid}-1-a.spool",
        f"runs-{pid}-2-b.spool",
    ]
    assert other.exists()
    assert spool.claim() == []  # this process's own claims are live: not taken twice
