"""The web console as a person uses it: a headless Chromium (Debian's, through its
chromedriver) on a running stack with demo-like data — workflows, then a workflow's
runs, a failed run's timeline, then a signal plotted from Prometheus.

With NEURALOPS_SCREENSHOTS=<dir> (``make screenshots``) it also saves the three main
pages as PNGs there, for the README.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from neuralops.runhistory.v1 import runhistory_pb2, runhistory_pb2_grpc
from neuralops.servers.app import App
from neuralops.servers.config import Config
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import ALL_ZERO, free_port
from tests.prometheus import PrometheusProcess

METRIC = "neuralops_workflow_last_run_duration_seconds"
STEP = 15
END = (int(datetime.now(UTC).timestamp()) // STEP) * STEP - 1800
SHOTS = os.environ.get("NEURALOPS_SCREENSHOTS")


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _node(
    name: str, step: int, start: datetime, ms: int, *, path: str = "", error: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "path": path,
        "step": step,
        "start_time": _ts(start),
        "end_time": _ts(start + timedelta(milliseconds=ms)),
        "duration_ms": ms,
        "status": "RUN_STATUS_FAILED" if error else "RUN_STATUS_COMPLETED",
        "error": error,
        "input": {"ticket": "refund for a double charge"},
        "output": {} if error else {f"{name}_done": True},
    }


def _call(
    kind: str,
    name: str,
    node: dict[str, Any],
    at: float,
    ms: int,
    *,
    model: str = "",
    tokens: tuple[int, int] | None = None,
    ttft: int | None = None,
    error: str = "",
    calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    start = datetime.fromisoformat(node["start_time"].replace("Z", "+00:00"))
    t = start + timedelta(milliseconds=node["duration_ms"] * at)
    call: dict[str, Any] = {
        "kind": f"CALL_KIND_{kind.upper()}",
        "name": name,
        "model": model,
        "start_time": _ts(t),
        "end_time": _ts(t + timedelta(milliseconds=ms)),
        "duration_ms": ms,
        "status": "RUN_STATUS_FAILED" if error else "RUN_STATUS_COMPLETED",
        "error": error,
        "calls": calls or [],
    }
    if tokens:
        call["usage"] = {
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "total_tokens": sum(tokens),
        }
    if ttft is not None:
        call["time_to_first_token_ms"] = ttft
    return call


def _calls(nodes: list[dict[str, Any]], *, fail: bool) -> None:
    """Model and tool calls as the hook records them: a streamed model call in classify,
    a tool that calls a model in search_kb, the summarizer's model call (failing in a
    failed run, whose summarize is a retry: attempt 2)."""
    by = {n["name"]: n for n in nodes}
    by["classify"]["calls"] = [
        _call(
            "model",
            "ChatOpenAI",
            by["classify"],
            0.05,
            150,
            model="gpt-4o-mini",
            tokens=(120, 30),
            ttft=85,
        )
    ]
    kb = by["search_kb"]
    inner = _call("model", "ChatOpenAI", kb, 0.3, 120, model="gpt-4o-mini", tokens=(50, 10))
    kb["calls"] = [_call("tool", "kb_search", kb, 0.1, 300, calls=[inner])]
    summarize = by["summarize"]
    if fail:
        summarize["attempt"] = 2
        summarize["calls"] = [
            _call(
                "model",
                "ChatOpenAI",
                summarize,
                0.02,
                680,
                model="gpt-4o",
                error="TimeoutError: summarizer model did not answer in 30s",
            )
        ]
    else:
        summarize["calls"] = [
            _call(
                "model",
                "ChatOpenAI",
                summarize,
                0.05,
                600,
                model="gpt-4o",
                tokens=(800, 200),
                ttft=140,
            )
        ]
        by["respond"]["calls"] = [
            _call(
                "model",
                "ChatOpenAI",
                by["respond"],
                0.1,
                200,
                model="gpt-4o-mini",
                tokens=(400, 80),
                ttft=60,
            )
        ]


def _all_calls(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    todo = [c for n in nodes for c in n.get("calls", [])]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c["calls"])
    return out


def _run(wpk: str, i: int, *, fail: bool) -> dict[str, Any]:
    """One triage run: classify, two retrievals in parallel, a 'research' subgraph
    (fetch, summarize), respond. A failing run fails in the subgraph's summarize."""
    t = datetime.now(UTC) - timedelta(hours=2) + timedelta(minutes=3 * i)
    slow = 1 + (i % 4) * 0.15
    nodes = [
        _node("classify", 1, t, int(180 * slow)),
        _node("search_kb", 2, t + timedelta(milliseconds=300), int(420 * slow)),
        _node("search_tickets", 2, t + timedelta(milliseconds=306), int(310 * slow)),
        _node("fetch", 3, t + timedelta(milliseconds=950), 240, path="research"),
    ]
    error = "TimeoutError: summarizer model did not answer in 30s" if fail else ""
    nodes.append(
        _node("summarize", 4, t + timedelta(milliseconds=1200), 700, path="research", error=error)
    )
    if not fail:
        nodes.append(_node("respond", 5, t + timedelta(milliseconds=1920), 260))
    _calls(nodes, fail=fail)
    end = max(datetime.fromisoformat(n["end_time"].replace("Z", "+00:00")) for n in nodes)
    tokens = sum(c["usage"]["total_tokens"] for c in _all_calls(nodes) if "usage" in c)
    return {
        "thread_id": f"ticket-{i // 2}",
        "usage": {
            "model_calls": sum(c["kind"] == "CALL_KIND_MODEL" for c in _all_calls(nodes)),
            "tool_calls": sum(c["kind"] == "CALL_KIND_TOOL" for c in _all_calls(nodes)),
            "failed_calls": int(fail),
            "tokens": {"total_tokens": tokens},
        },
        "wpk_id": wpk,
        "run_id": f"{wpk}-{i:03d}",
        "status": "RUN_STATUS_FAILED" if fail else "RUN_STATUS_COMPLETED",
        "duration_ms": int((end - t).total_seconds() * 1000),
        "error": error,
        "inputs": {"ticket": "refund for a double charge"},
        "outputs": {} if fail else {"text": "Refund issued; the duplicate charge is reversed."},
        "node_logs": nodes,
    }


def _grid(values: list[float], last: int) -> list[tuple[float, float]]:
    return [(last - (len(values) - 1 - k) * STEP, v) for k, v in enumerate(values)]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("console")
    prom = PrometheusProcess(root / "prom")
    steady = [1.6 + 0.12 * math.sin(k * 1.3) for k in range(60)]
    after = [1.6 + 0.1 * math.sin(k * 0.9) for k in range(1, 21)]
    prom.plant(
        [
            (
                METRIC,
                {"wpk_id": "support-triage"},
                _grid([*steady[:-1], 9.4], END) + _grid(after, END + 20 * STEP),
            ),
            (
                METRIC,
                {"wpk_id": "billing-triage"},
                _grid([v * 0.7 for v in steady + after], END + 20 * STEP),
            ),
        ]
    )
    prom.start()
    cfg = Config(data_dir=root / "data", metrics_port=0, prom_url=prom.url)
    app = App(cfg, ports={**ALL_ZERO, "http": free_port()}, relay_backoff_s=0.5).start()
    assert app.http is not None
    base = f"http://127.0.0.1:{app.http.port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            runs = [_run("support-triage", i, fail=i % 6 == 4) for i in range(26)]
            runs += [_run("billing-triage", i, fail=i == 7) for i in range(9)]
            paused = _run("billing-triage", 9, fail=False)
            paused["status"] = "RUN_STATUS_INTERRUPTED"
            paused["interrupts"] = [
                {"id": "int-1", "value": {"question": "refund 120 EUR?"}, "next_nodes": ["approve"]}
            ]
            runs.append(paused)
            # Through the real RunHistory server with the generated client, as the hook sends.
            stub = runhistory_pb2_grpc.RunHistoryServiceStub(
                grpc.insecure_channel(app.address("runhistory"))
            )
            request = json_format.ParseDict({"runs": runs}, runhistory_pb2.BatchLogRunsRequest())
            assert len(stub.BatchLogRuns(request, timeout=30).results) == len(runs)
            probe = http.post(
                "/signals:probe",
                json={
                    "query": METRIC,
                    "threshold": 3,
                    "points": 60,
                    "step": f"{STEP}s",
                    "evaluation_time": _ts(datetime.fromtimestamp(END, UTC)),
                },
            )
            assert probe.status_code == 200 and probe.json()["anomalies"] == 1, probe.text
            from tests.helpers import wait_for

            wait_for(
                lambda: (
                    http.get("/workflows").json()["workflows"][:1]
                    and all(w["latest_run_id"] for w in http.get("/workflows").json()["workflows"])
                    and len(http.get("/workflows").json()["workflows"]) == 2
                )
            )
        yield base
    finally:
        app.stop(grace=1)
        prom.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "Chromium is not installed: scripts/bootstrap.sh installs the Debian packages "
        "chromium and chromium-driver"
    )
    opts = Options()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1360,900",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    yield browser
    browser.quit()


def _wait(browser: WebDriver, css: str) -> WebElement:
    found: WebElement = WebDriverWait(browser, 20).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, css))
    )
    return found


def _attr(element: WebElement, name: str) -> str:
    return element.get_attribute(name) or ""


def _shot(browser: WebDriver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1360, max(700, min(int(height) + 160, 1600)))
        browser.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
        browser.set_window_size(1360, 900)


def test_workflow_to_runs_to_failed_timeline_to_signal(console: str, browser: WebDriver) -> None:
    browser.get(console + "/")
    # Workflows: both, with their latest run and run counts.
    _wait(browser, "#workflows tr[data-workflow='support-triage'] .strip i")
    rows = {
        r.get_attribute("data-workflow"): r
        for r in browser.find_elements(By.CSS_SELECTOR, "#workflows tbody tr")
    }
    assert set(rows) == {"support-triage", "billing-triage"}
    support = rows["support-triage"]
    WebDriverWait(browser, 10).until(
        lambda _: support.find_element(By.CSS_SELECTOR, ".runs-count").text == "26"
    )
    assert "support-triage-025" in support.text  # the latest run
    assert "completed" in support.text
    _shot(browser, "workflows")

    # A workflow's runs: a page of 20, newest first, then only the failed ones.
    support.find_element(By.CSS_SELECTOR, "a.wf-link").click()
    _wait(browser, "#runs tbody tr")
    ids = [
        r.get_attribute("data-run")
        for r in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    ]
    assert ids == [f"support-triage-{i:03d}" for i in range(25, 5, -1)]
    # Tokens and calls per run, from ListRuns' usage totals (the server's RunSummary).
    first = browser.find_element(By.CSS_SELECTOR, "#runs tbody tr[data-run='support-triage-025']")
    assert first.find_element(By.CSS_SELECTOR, "td.tokens").text.replace(",", "") == "1690"
    assert "4 model · 1 tool" in first.text and "ticket-12" in first.text
    assert browser.find_element(By.ID, "next").is_enabled()
    assert not browser.find_element(By.ID, "prev").is_enabled()
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("failed")
    WebDriverWait(browser, 10).until(lambda b: "status=failed" in b.current_url)
    _wait(browser, "#runs tbody tr")
    WebDriverWait(browser, 10).until(
        lambda b: all(
            "failed" in _attr(r, "class")
            for r in b.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
        )
    )
    failed = [
        r.get_attribute("data-run")
        for r in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    ]
    assert failed == [f"support-triage-{i:03d}" for i in (22, 16, 10, 4)]
    assert {
        r.find_element(By.CSS_SELECTOR, "td.tokens").text
        for r in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    } == {"210"}
    _shot(browser, "runs")
    # The thread filter is ListRuns' too: one ticket's two runs.
    browser.get(console + "/#/workflows/support-triage?thread=ticket-12")
    WebDriverWait(browser, 10).until(
        lambda b: (
            [
                r.get_attribute("data-run")
                for r in b.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
            ]
            == ["support-triage-025", "support-triage-024"]
        )
    )
    browser.get(console + "/#/workflows/support-triage?status=failed")
    _wait(browser, "#runs tbody tr[data-run='support-triage-022']")

    # The failed run's timeline: parallel branches in two lanes, the subgraph as its own
    # group, the failing node marked and its error shown.
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr a.run-link").click()
    _wait(browser, "#timeline .tl-bar")
    assert browser.find_element(By.ID, "title").text == "Run support-triage-022"
    assert "TimeoutError" in browser.find_element(By.ID, "run-error").text
    groups = {
        g.get_attribute("data-path"): g for g in browser.find_elements(By.CSS_SELECTOR, ".tl-group")
    }
    assert set(groups) == {"", "research"}
    assert "subgraph research" in groups["research"].text
    top_rows = groups[""].find_elements(By.CSS_SELECTOR, ".tl-row")
    assert len(top_rows) == 2  # search_kb and search_tickets overlap: two lanes
    lanes = [
        [b.get_attribute("data-node") for b in r.find_elements(By.CSS_SELECTOR, ".tl-bar")]
        for r in top_rows
    ]
    assert lanes == [["classify", "search_kb"], ["search_tickets"]]
    assert [r.find_element(By.CSS_SELECTOR, ".tl-label").text for r in top_rows] == [
        "",
        "∥ parallel",
    ]
    bad = groups["research"].find_element(By.CSS_SELECTOR, ".tl-bar.failed")
    assert bad.get_attribute("data-node") == "summarize" and bad.text.startswith("✕ summarize")
    assert "selected" in _attr(bad, "class")
    assert "summarizer model did not answer" in browser.find_element(By.ID, "node-detail").text
    assert "5 (1 failed)" in browser.find_element(By.ID, "run-facts").text
    assert (
        "attempt 2" in bad.text and "attempt 2" in browser.find_element(By.ID, "node-detail").text
    )
    # Calls nested under their node on the timeline, and in the node's calls table.
    calls = browser.find_elements(By.CSS_SELECTOR, "#timeline .tl-call")
    assert sorted((_attr(c, "data-node"), _attr(c, "data-call")) for c in calls) == [
        ("classify", "ChatOpenAI"),
        ("search_kb", "ChatOpenAI"),
        ("search_kb", "kb_search"),
        ("summarize", "ChatOpenAI"),
    ]
    failed_call = groups["research"].find_element(By.CSS_SELECTOR, ".tl-call.failed")
    assert "TimeoutError" in _attr(failed_call, "title")
    detail_calls = browser.find_element(By.ID, "calls")
    assert "gpt-4o" in detail_calls.text and "TimeoutError" in detail_calls.text
    facts = browser.find_element(By.ID, "run-facts").text
    assert "210" in facts and "ticket-11" in facts and "3 model · 1 tool · 1 failed" in facts
    groups[""].find_element(By.CSS_SELECTOR, ".tl-bar[data-node='classify']").click()
    WebDriverWait(browser, 5).until(
        lambda b: "Node classify" in b.find_element(By.ID, "node-detail").text
    )
    row = browser.find_element(By.CSS_SELECTOR, "#calls tr.call-row")
    assert "gpt-4o-mini" in row.text and "85 ms" in row.text and "120 / 30" in row.text
    assert row.find_element(By.CSS_SELECTOR, ".call-tokens").text == "150"
    groups[""].find_element(By.CSS_SELECTOR, ".tl-bar[data-node='search_kb']").click()
    WebDriverWait(browser, 5).until(
        lambda b: (
            [
                (_attr(r, "data-kind"), r.find_element(By.CSS_SELECTOR, ".call-tokens").text)
                for r in b.find_elements(By.CSS_SELECTOR, "#calls tr.call-row")
            ]
            == [("tool", "—"), ("model", "60")]
        )
    )
    assert "↳" in browser.find_elements(By.CSS_SELECTOR, "#calls tr.call-row")[1].text
    fetch = groups["research"].find_element(By.CSS_SELECTOR, ".tl-bar[data-node='fetch']")
    fetch.click()
    WebDriverWait(browser, 5).until(
        lambda b: "Node fetch" in b.find_element(By.ID, "node-detail").text
    )
    bad.click()
    _shot(browser, "run")

    # Signals: the duration spike of support-triage, plotted around the anomaly.
    browser.find_element(By.CSS_SELECTOR, "a[data-nav='signals']").click()
    _wait(browser, "#signals tbody tr")
    rows_s = browser.find_elements(By.CSS_SELECTOR, "#signals tbody tr")
    assert len(rows_s) == 1
    assert METRIC in rows_s[0].text and 'wpk_id="support-triage"' in rows_s[0].text
    rows_s[0].find_element(By.CSS_SELECTOR, "a.signal-link").click()
    _wait(browser, "#signal-plot #anomaly-point")
    assert browser.find_element(By.ID, "title").text == f"Signal: {METRIC}"
    assert "9.4" in browser.find_element(By.ID, "signal-facts").text
    line = browser.find_element(By.CSS_SELECTOR, "#signal-plot polyline.series")
    points = _attr(line, "points").split()
    assert len(points) > 40  # the series around the anomaly, not just the one point
    # The anomaly sits on the plotted line's highest point (smallest y on screen).
    top = min(float(p.split(",")[1]) for p in points)
    dot = browser.find_element(By.ID, "anomaly-point")
    assert abs(float(_attr(dot, "cy")) - top) < 1.0
    assert browser.find_elements(By.CSS_SELECTOR, "#signal-plot polyline.other")  # billing
    _shot(browser, "signal")


def test_errors_are_shown_not_swallowed(console: str, browser: WebDriver) -> None:
    browser.get(console + "/#/runs/support-triage/no-such-run")
    box = _wait(browser, "#error")
    assert "404" in box.text and "RUN_NOT_FOUND" in box.text
    browser.get(console + "/#/workflows/no-such-workflow")
    box = _wait(browser, "#error")
    assert "404" in box.text


def test_watches_view_lists_watches(console: str, browser: WebDriver) -> None:
    made = httpx.post(
        console + "/watches",
        json={"name": "triage duration", "query": METRIC, "interval": "3600s"},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    wid = made.json()["watch"]["id"]
    browser.get(console + "/#/watches")
    row = _wait(browser, f"#watches tr[data-watch='{wid}']")
    assert "triage duration" in row.text and METRIC in row.text and "3600s" in row.text
    WebDriverWait(browser, 10).until(
        lambda _: row.find_element(By.CSS_SELECTOR, "td.episodes").text != "…"
    )
    _shot(browser, "watches")


def test_an_interrupted_run_shows_what_it_paused_on(console: str, browser: WebDriver) -> None:
    browser.get(console + "/#/runs/billing-triage/billing-triage-009")
    box = _wait(browser, "#interrupts")
    assert "Paused on 1 interrupt" in box.text and "refund 120 EUR?" in box.text
    assert "approve" in box.text and "int-1" in box.text
    assert "ticket-4" in browser.find_element(By.ID, "run-thread").text
