"""`neuralops report`: regenerate the Phase A reports from real runs.

Every report is written from what the commands printed in this run: migrations are
applied, servers are started as child processes, `grpcurl` and the Python client are
called, and the stored rows are read back. Each check is PASS or FAIL from its own
output; nothing here is typed by hand. Storage is POSTGRES_DSN when set (a fresh
schema, dropped afterwards), else SQLite (the report says so).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neuralops.servers import localprom
from neuralops.servers.config import Config
from neuralops.servers.db import open_database, scratch_schema
from neuralops.servers.processes import ServerProcess, free_port, grpcurl, grpcurl_path

RH = "neuralops.runhistory.v1.RunHistoryService"
REG = "neuralops.registry.v1.RegistryService"
INS = "neuralops.insight.v1.InsightService"
SEED_RUN = {
    "wpk_id": "test",
    "run_id": "r1",
    "inputs": {},
    "outputs": {"text": "ok"},
    "status": "completed",
    "node_logs": [],
    "duration_ms": 123,
}


@dataclass
class Step:
    title: str
    command: str
    output: str
    ok: bool
    expect: str


@dataclass
class Report:
    task: str
    title: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def check(self, title: str, command: str, output: str, ok: bool, expect: str) -> bool:
        self.steps.append(Step(title, command, output.strip(), ok, expect))
        print(f"  [{'PASS' if ok else 'FAIL'}] {self.task} {title}", flush=True)
        return ok

    def markdown(self, generated: str) -> str:
        out = [
            f"# {self.task} — {self.title}",
            "",
            f"**Result: {'PASS' if self.ok else 'FAIL'}** ({generated})",
            "",
        ]
        if self.notes:
            out += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        out += ["## Checks", ""]
        for i, s in enumerate(self.steps, 1):
            out += [
                f"### {i}. {s.title} — {'PASS' if s.ok else 'FAIL'}",
                "",
                f"Expected: {s.expect}",
                "",
                "```console",
                f"$ {s.command}",
                s.output or "(no output)",
                "```",
                "",
            ]
        return "\n".join(out)


def _run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[str, int]:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    return (proc.stdout + proc.stderr).strip(), proc.returncode


def _grpcurl(addr: str, method: str, data: dict[str, Any] | None = None) -> tuple[str, str, int]:
    proc = grpcurl(addr, method, data=data)
    shown = f"grpcurl -plaintext {'-d ' + shlex.quote(json.dumps(data)) + ' ' if data is not None else ''}{addr} {method}"
    return shown, (proc.stdout + proc.stderr).strip(), proc.returncode


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _wait(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@contextmanager
def _storage(base_dsn: str | None) -> Iterator[str | None]:
    """A fresh Postgres schema for this run (dropped afterwards), or None for SQLite."""
    if not base_dsn:
        yield None
        return
    with scratch_schema(base_dsn, "nops_report") as dsn:
        yield dsn


def _query(
    dsn: str | None, data_dir: Path, sql: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    db = open_database(dsn, Config(data_dir=data_dir).sqlite_path)
    try:
        with db.transaction(write=False) as tx:
            return tx.execute(sql, params)
    finally:
        db.close()


def _storage_note(dsn: str | None) -> str:
    if dsn:
        return "Storage: Postgres (POSTGRES_DSN), a fresh schema for this run."
    return "Storage: POSTGRES_DSN was not set, so the SQLite fallback file under the data directory was used (the servers log this)."


# ------------------------------------------------------------------------- A.1


def report_a1(dsn: str | None, work: Path) -> Report:
    r = Report("A.1", "Run logger: RunHistory over gRPC")
    r.notes.append(_storage_note(dsn))
    r.notes.append(
        "Embeddings: OPENAI_KEY / OPENAI_API_KEY not set here, so runs are stored with embedding_status SKIPPED and SearchRuns answers FAILED_PRECONDITION (the log says so). The embedding path itself is covered by tests/test_embeddings.py (real openai client, Milvus Lite)."
    )
    data = work / "a1"
    server = ServerProcess(data, postgres_dsn=dsn, services="runhistory")
    env = server.env
    cli = [sys.executable, "-m", "neuralops.servers.cli"]
    out, code = _run([*cli, "migrate"], env)
    r.check(
        "migrations apply",
        "neuralops migrate",
        out,
        code == 0 and "001_create_workflow_runs.sql" in out,
        "exit 0, 001… applied",
    )
    out, code = _run([*cli, "migrate"], env)
    r.check(
        "re-running migrations is a no-op",
        "neuralops migrate",
        out,
        code == 0 and "nothing (up to date)" in out,
        "applied now: nothing",
    )
    server.start()
    try:
        addr = server.address("runhistory")
        shown, out, code = _grpcurl(addr, "list")
        r.check("grpcurl list", shown, out, code == 0 and RH in out.split(), f"lists {RH}")
        code_py = f"from neuralops.clients import log_run; print(log_run({SEED_RUN!r}))"
        out, code = _run([sys.executable, "-c", code_py], env)
        r.check(
            "a run is inserted and its id returned (the seed's check)",
            f'python -c "{code_py}"',
            out,
            code == 0 and out.splitlines()[-1:] == ["r1"],
            "prints r1",
        )
        run = {
            "wpk_id": "test",
            "run_id": "r2",
            "inputs": {"q": "hi"},
            "outputs": {"text": "ok"},
            "status": "RUN_STATUS_COMPLETED",
            "duration_ms": 123,
            "node_logs": [{"name": "plan", "status": "RUN_STATUS_COMPLETED", "duration_ms": 4}],
        }
        shown, first, c1 = _grpcurl(addr, f"{RH}/LogRun", {"run": run})
        r.check(
            "grpcurl LogRun",
            shown,
            first,
            c1 == 0 and _json(first).get("created") is True,
            "created: true and the row id",
        )
        shown, again, c2 = _grpcurl(addr, f"{RH}/LogRun", {"run": run})
        same = _json(again).get("id") == _json(first).get("id") and "created" not in _json(again)
        r.check(
            "a retried LogRun returns the first id, created false",
            shown,
            again,
            c2 == 0 and same,
            "same id, no created flag",
        )
        shown, got, c3 = _grpcurl(addr, f"{RH}/GetRun", {"wpk_id": "test", "run_id": "r2"})
        g = _json(got).get("run", {})
        r.check(
            "grpcurl GetRun (with the embedding status)",
            shown,
            got,
            c3 == 0
            and g.get("embedding_status") == "EMBEDDING_STATUS_SKIPPED"
            and g.get("node_logs", [{}])[0].get("name") == "plan",
            "the run, its node log, embedding_status SKIPPED",
        )
        rows = _query(
            dsn,
            data,
            "SELECT wpk_id, run_id, status, duration_ms, embedding_status FROM workflow_runs ORDER BY created_at",
        )
        r.check(
            "stored rows (one per run id, retries included)",
            "SELECT wpk_id, run_id, status, duration_ms, embedding_status FROM workflow_runs",
            "\n".join(json.dumps(x) for x in rows),
            [x["run_id"] for x in rows] == ["r1", "r2"],
            "exactly r1 and r2",
        )
        shown, out, code = _grpcurl(addr, f"{RH}/LogRun", {"run": {"run_id": "x"}})
        r.check(
            "bad input is INVALID_ARGUMENT naming the field",
            shown,
            out,
            code != 0 and "InvalidArgument" in out and "run.wpk_id" in out,
            "InvalidArgument, run.wpk_id",
        )
        log = server.log.read_text()
        fallback = "POSTGRES_DSN is not set" in log
        r.check(
            "the server logs its storage and the skipped embeddings",
            "grep -E 'SQLite|embeddings skipped' server.log",
            "\n".join(
                line
                for line in log.splitlines()
                if "SQLite" in line or "embeddings skipped" in line
            ),
            "embeddings skipped" in log and (fallback or dsn is not None),
            "both lines present",
        )
    finally:
        server.stop()
    return r


# ------------------------------------------------------------------------- A.2


def report_a2(dsn: str | None, work: Path) -> Report:
    r = Report("A.2", "Insight engine: anomaly signals from a real Prometheus")
    r.notes.append(_storage_note(dsn))
    if not localprom.available():
        r.notes.append(
            "BLOCKER: prometheus/promtool are not installed (Debian package 'prometheus'); nothing could be probed."
        )
        r.check(
            "Prometheus available", "which prometheus promtool", "not found", False, "both found"
        )
        return r
    step, points = 15, 60
    end = (int(datetime.now(UTC).timestamp()) // step) * step - 1800
    at = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def grid(values: list[float]) -> list[tuple[float, float]]:
        return [(end - (len(values) - 1 - k) * step, v) for k, v in enumerate(values)]

    prom_port = free_port()
    prom = localprom.LocalPrometheus(
        work / "a2-prom", prom_port, scrape=[f"127.0.0.1:{prom_port}", f"127.0.0.1:{free_port()}"]
    )
    prom.plant(
        [
            ("up", {"job": "planted", "instance": "web-1"}, grid([1.0] * points)),
            ("up", {"job": "planted", "instance": "web-2"}, grid([1.0] * (points - 1) + [0.0])),
            ("up", {"job": "planted", "instance": "web-3"}, grid([1.0] * points)),
        ]
    )
    r.notes.append(
        f"Data: three planted `up` series (promtool tsdb create-blocks-from openmetrics), {points} points every {step}s ending {at}; web-2 goes down on the last point. Prometheus also scrapes itself and one dead target live, so `up` has two live series too."
    )
    prom.start()
    server = ServerProcess(
        work / "a2", postgres_dsn=dsn, services="insight", extra_env={"PROM_URL": prom.url}
    )
    server.start()
    try:
        addr = server.address("insight")
        # The default step is 15s and the range ends on that grid: wait until a grid
        # point lies after the first live scrapes.
        time.sleep((time.time() // step + 1) * step - time.time() + 1.5)
        shown, out, code = _grpcurl(addr, f"{INS}/Probe", {"query": "up", "threshold": 2})
        live = _json(out).get("series", [])
        r.check(
            "the seed's probe, now: per-series scores",
            shown,
            out,
            code == 0 and len(live) == 2 and all("outcome" in s for s in live),
            "one entry per live series (2), each with its outcome (only seconds of data yet: TOO_FEW_POINTS)",
        )
        req = {
            "query": "up",
            "threshold": 2,
            "points": points,
            "step": f"{step}s",
            "evaluation_time": at,
        }
        shown, out, code = _grpcurl(addr, f"{INS}/Probe", req)
        series = _json(out).get("series", [])
        flagged = [s for s in series if s.get("anomalous")]
        r.check(
            "probe at the planted time: each series scored, one anomaly with a signal id",
            shown,
            out,
            code == 0
            and len(series) == 3
            and len(flagged) == 1
            and flagged[0]["labels"]["instance"] == "web-2"
            and bool(flagged[0].get("signal_id")),
            "3 series; only web-2 anomalous, with signal_id",
        )
        shown, again, code = _grpcurl(addr, f"{INS}/Probe", req)
        again_ids = [
            s.get("signal_id") for s in _json(again).get("series", []) if s.get("anomalous")
        ]
        count = _query(dsn, work / "a2", "SELECT COUNT(*) AS n FROM insight_signals")[0]["n"]
        r.check(
            "re-probing the same sample adds no row",
            shown + "   # again",
            f"signal ids: {again_ids}\nrows in insight_signals: {count}",
            code == 0
            and bool(flagged)
            and again_ids == [flagged[0]["signal_id"]]
            and int(count) == 1,
            "same signal id, 1 row",
        )
        shown, out, code = _grpcurl(addr, f"{INS}/ListSignals", {})
        listed = _json(out).get("signals", [])
        r.check(
            "ListSignals returns it",
            shown,
            out,
            code == 0 and bool(flagged) and [s["id"] for s in listed] == [flagged[0]["signal_id"]],
            "the one signal",
        )
        rows = _query(
            dsn,
            work / "a2",
            "SELECT metric, value, score, hint, labels, method, sample_time FROM insight_signals",
        )
        r.check(
            "the stored rows",
            "SELECT metric, value, score, hint, labels, method, sample_time FROM insight_signals",
            "\n".join(json.dumps(x, default=str) for x in rows),
            len(rows) == 1,
            "one row, labels kept",
        )
        shown, out, code = _grpcurl(addr, f"{INS}/Probe", {"query": "rate(up[5m]"})
        r.check(
            "bad PromQL is INVALID_ARGUMENT with Prometheus' text",
            shown,
            out,
            code != 0 and "InvalidArgument" in out and "parse error" in out,
            "InvalidArgument … parse error",
        )
    finally:
        server.stop()
        prom.stop()
    return r


# ------------------------------------------------------------------------- A.3


def report_a3(dsn: str | None, work: Path) -> Report:
    r = Report("A.3", "Registry: workflows linked to their runs")
    r.notes.append(_storage_note(dsn))
    server = ServerProcess(work / "a3", postgres_dsn=dsn, services="all").start()
    try:
        rh, reg = server.address("runhistory"), server.address("registry")
        for i in (1, 2):
            run = {
                "wpk_id": "test-workflow",
                "run_id": f"run-{i}",
                "status": "RUN_STATUS_COMPLETED",
                "duration_ms": 100 * i,
                "outputs": {"text": "ok"},
            }
            shown, out, code = _grpcurl(rh, f"{RH}/LogRun", {"run": run})
            r.check(
                f"log run-{i} of test-workflow",
                shown,
                out,
                code == 0 and _json(out).get("created") is True,
                "created: true",
            )

        def latest() -> str:
            return str(
                _json(_grpcurl(reg, f"{REG}/GetWorkflow", {"workflow_id": "test-workflow"})[1])
                .get("workflow", {})
                .get("latest_run_id", "")
            )

        linked = _wait(lambda: latest() == "run-2")
        shown, out, code = _grpcurl(reg, f"{REG}/GetWorkflow", {"workflow_id": "test-workflow"})
        r.check(
            "GetWorkflow shows the latest run id (linked by the outbox relay via NotifyRun)",
            shown,
            out,
            linked and code == 0,
            "latest_run_id: run-2",
        )
        shown, out, code = _grpcurl(
            reg, f"{REG}/ListWorkflowRuns", {"workflow_id": "test-workflow"}
        )
        runs = [x["run_id"] for x in _json(out).get("runs", [])]
        r.check(
            "ListWorkflowRuns lists its runs, newest first",
            shown,
            out,
            code == 0 and runs == ["run-2", "run-1"],
            "run-2, run-1",
        )
        old = {"workflow_id": "test-workflow", "run_id": "run-1"}
        shown, out, code = _grpcurl(reg, f"{REG}/NotifyRun", old)
        r.check(
            "a late notice of an older run changes nothing",
            shown,
            out,
            code == 0
            and _json(out).get("latest_run_id") == "run-2"
            and "updated" not in _json(out),
            "updated false, latest stays run-2",
        )
        forged = {
            "workflow_id": "test-workflow",
            "run_id": "run-9",
            "id": str(uuid.uuid4()),
            "status": "RUN_STATUS_FAILED",
            "created_at": "9999-01-01T00:00:00Z",
        }
        shown, out, code = _grpcurl(reg, f"{REG}/NotifyRun", forged)
        r.check(
            "a notice of a run RunHistory never stored is refused",
            shown,
            out,
            code != 0 and "NotFound" in out and latest() == "run-2",
            "NOT_FOUND, latest stays run-2",
        )
        shown, out, code = _grpcurl(
            reg, f"{REG}/ListWorkflowRuns", {"workflow_id": "test-workflow", "page_size": 1}
        )
        token = _json(out).get("next_page_token", "")
        r.check(
            "pages carry an opaque token",
            shown,
            out,
            code == 0 and bool(token),
            "next_page_token present",
        )
        shown, out, code = _grpcurl(reg, f"{REG}/GetWorkflow", {"workflow_id": "nope"})
        r.check(
            "an unknown workflow is NOT_FOUND",
            shown,
            out,
            code != 0 and "NotFound" in out,
            "NotFound",
        )
    finally:
        server.stop()
    return r


# ---------------------------------------------------------------------- summary


def summary(reports: list[Report], generated: str, bench: Path) -> str:
    lines = [
        "# Phase A — summary",
        "",
        f"Regenerated by `make reports` ({generated}). Each task's result comes from running its checks; the commands and their output are in the task reports.",
        "",
        "| task | result | checks | report |",
        "|---|---|---|---|",
    ]
    files = {
        "A.1": "0A.1_run_logger.md",
        "A.2": "0A.2_insight_engine.md",
        "A.3": "0A.3_registry_runs.md",
    }
    for r in reports:
        passed = sum(s.ok for s in r.steps)
        lines.append(
            f"| {r.task} {r.title} | **{'PASS' if r.ok else 'FAIL'}** | {passed}/{len(r.steps)} | [{files[r.task]}]({files[r.task]}) |"
        )
    lines += ["", "## Notes", ""]
    seen: set[str] = set()
    for r in reports:
        for n in r.notes:
            if n not in seen:
                seen.add(n)
                lines.append(f"- {n}")
    failed = [f"{r.task}: {s.title}" for r in reports for s in r.steps if not s.ok]
    lines += ["", "## Blockers", ""]
    lines += [f"- FAILED: {f}" for f in failed] or ["- None in this run."]
    if bench.exists():
        lines += [
            "",
            "## Benchmarks",
            "",
            f"From the last `make bench` ([{bench.name}]({bench.name})):",
            "",
            "| measure | value |",
            "|---|---|",
        ]
        lines += [
            line
            for line in bench.read_text().splitlines()
            if line.startswith("| ") and "measure" not in line and "---" not in line
        ]
    lines += [
        "",
        "## Next steps",
        "",
        "- Embeddings against a real OpenAI-compatible endpoint in a deployment (here: tested against a local one).",
        "- Phase B: act on the stored signals (alert routing, run comparison through SearchRuns).",
        "- Partition workflow_runs by time once a deployment passes ~100M runs (see the README's scale path).",
        "",
    ]
    return "\n".join(lines)


def cmd_report(config: Config, args: argparse.Namespace) -> int:
    grpcurl_path()  # fail early with a clear message
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generated = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    reports = []
    with tempfile.TemporaryDirectory(prefix="neuralops-report-") as tmp:
        for make in (report_a1, report_a2, report_a3):
            with _storage(config.postgres_dsn) as dsn:
                reports.append(make(dsn, Path(tmp)))
    names = {
        "A.1": "0A.1_run_logger.md",
        "A.2": "0A.2_insight_engine.md",
        "A.3": "0A.3_registry_runs.md",
    }
    for r in reports:
        (out / names[r.task]).write_text(r.markdown(generated))
    (out / "Phase_A_summary.md").write_text(summary(reports, generated, out / "benchmarks.md"))
    print(
        f"wrote {out}/Phase_A_summary.md and the task reports: "
        + ", ".join(f"{r.task} {'PASS' if r.ok else 'FAIL'}" for r in reports)
    )
    return 0 if all(r.ok for r in reports) else 1


def add_command(sub: Any) -> None:
    p = sub.add_parser("report", help="regenerate the Phase A reports in reports/ from real runs")
    p.add_argument("--out", default="reports", help="folder to write (default reports/)")
    p.set_defaults(func=cmd_report)
