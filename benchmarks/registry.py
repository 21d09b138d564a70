"""ListWorkflowRuns at page 1 and at deep pages, 1,000,000 runs in Postgres."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import grpc
import psycopg
from neuralops.registry.v1 import registry_pb2 as rpb
from neuralops.registry.v1 import registry_pb2_grpc
from neuralops.servers import pagination
from neuralops.servers.db import PostgresDatabase, scratch_schema
from neuralops.servers.migrate import migrate
from neuralops.servers.processes import ServerProcess
from neuralops.servers.runhistory.model import RunFilter
from neuralops.servers.runhistory.service import _list_scope

from benchmarks.common import Section, start_server, stats_ms

BIG = "big-workflow"
FILL = """
INSERT INTO workflow_runs (id, wpk_id, run_id, inputs, outputs, status, duration_ms, node_logs, created_at, updated_at)
SELECT gen_random_uuid(),
       CASE WHEN g <= %(big)s THEN %(name)s ELSE 'wf-' || (g %% 800) END,
       'run-' || g, '{}', '{"text":"ok"}',
       CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'completed' END,
       g %% 1000, '[]',
       now() - make_interval(secs => g / 1000.0), now()
FROM generate_series(1, %(total)s) AS g
"""


def run(
    section: Section, base_dsn: str, total: int = 1_000_000, big: int = 200_000, calls: int = 300
) -> None:
    with scratch_schema(base_dsn, "nops_bench") as dsn:
        db = PostgresDatabase(dsn)
        migrate(db)
        db.close()
        t0 = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(FILL, {"big": big, "name": BIG, "total": total})
            conn.execute("VACUUM ANALYZE workflow_runs")  # steady state, as after autovacuum
        section.add(
            "fill", f"{total:,} runs ({big:,} in {BIG!r}) in {time.perf_counter() - t0:.1f} s"
        )
        with tempfile.TemporaryDirectory() as tmp:
            server = start_server(Path(tmp), services="registry,runhistory", postgres_dsn=dsn)
            try:
                _measure(section, server, dsn, big, calls)
            finally:
                server.stop()
    section.notes.append(
        "Each figure is the gRPC round trip of ListWorkflowRuns (page_size 20) measured by a client "
        f"in this process against the Registry server in another (which asks RunHistory's ListRuns), {calls} calls per depth. The deep "
        "tokens are the ones the server would hand out at that depth (built from the row at that "
        "position). OFFSET rows time the same page with LIMIT/OFFSET in SQL, for comparison."
    )


def _token_at(dsn: str, offset: int) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT id, created_at FROM workflow_runs WHERE wpk_id = %s ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
            (BIG, offset - 1),
        ).fetchone()
    assert row is not None
    # The Registry passes RunHistory's ListRuns token through: build the one it would issue.
    return pagination.encode_position(_list_scope(BIG, RunFilter()), (row[1], str(row[0])))


def _measure(section: Section, server: ServerProcess, dsn: str, big: int, calls: int) -> None:
    stub = registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(server.address("registry")))
    depths = [
        ("page 1", 0),
        ("page 5,000", 5000 * 20 - 20),
        (f"page {big // 20:,} (last)", big - 20),
    ]
    for label, offset in depths:
        token = _token_at(dsn, offset) if offset else ""
        req = rpb.ListWorkflowRunsRequest(workflow_id=BIG, page_size=20, page_token=token)
        for _ in range(20):
            stub.ListWorkflowRuns(req)
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            reply = stub.ListWorkflowRuns(req)
            samples.append(time.perf_counter() - t0)
        assert len(reply.runs) == 20
        s = stats_ms(samples)
        section.add(
            f"ListWorkflowRuns {label}, p50 / p99", f"{s['p50']:.2f} ms / {s['p99']:.2f} ms"
        )
    with psycopg.connect(dsn) as conn:
        for label, offset in depths[1:]:
            t0 = time.perf_counter()
            for _ in range(5):
                conn.execute(
                    "SELECT run_id FROM workflow_runs WHERE wpk_id = %s ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET %s",
                    (BIG, offset),
                ).fetchall()
            section.add(
                f"SQL OFFSET at {label}, mean", f"{(time.perf_counter() - t0) / 5 * 1000:.1f} ms"
            )
