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

import httpx
import pytest
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config
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
    end = max(datetime.fromisoformat(n["end_time"].replace("Z", "+00:00")) for n in nodes)
    return {
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
            reply = http.post("/runs:batchLog", json={"runs": runs})
            assert reply.status_code == 200, reply.text
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
    _shot(browser, "runs")

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
