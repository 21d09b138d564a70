"""A small Prometheus HTTP API client (httpx + orjson): range queries aligned to a grid.

Answers are decoded with orjson and converted to a ``[series, step]`` matrix with numpy
in one pass per series. Values Prometheus sends as strings that are not numbers
(anything a proxy or a broken exporter could put there) become missing samples, never
an error. Long ranges are fetched in chunks of at most 10,000 points (Prometheus' own
limit is 11,000 per series), each chunk decoded and dropped before the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import orjson
from neuralops.servers.insight.scoring import FloatArray
from neuralops.servers.runtime.errors import (
    Cancelled,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

CHUNK_POINTS = 10_000


@dataclass(frozen=True)
class RangeResult:
    labels: list[dict[str, str]]
    values: FloatArray  # [series, step], NaN where absent
    start: float
    step: float


def _pairs(raw: Any) -> FloatArray:
    """``[[t, "v"], ...]`` as an ``[n, 2]`` float array; unparsable entries -> NaN."""
    try:
        pairs = np.asarray(raw, dtype=np.float64)
        if pairs.ndim == 2 and pairs.shape[1] == 2:
            return pairs
    except (ValueError, TypeError):
        pass
    out = np.full((len(raw) if isinstance(raw, list) else 0, 2), np.nan)
    for k, item in enumerate(out):
        try:
            t, v = raw[k]
            item[0] = float(t)
            item[1] = float(v)
        except (ValueError, TypeError, IndexError, KeyError):
            continue
    return out


def _full_row(raw: list[Any], t0: float, step_s: float, n: int) -> FloatArray | None:
    """The fast path: a series with a sample at every one of the ``n`` grid steps
    (Prometheus answers each step at most once, in order, so first and last on the
    grid mean all are) needs only its values converted; None when it does not apply."""
    try:
        first, last = float(raw[0][0]), float(raw[-1][0])
        if abs(first - t0) > step_s / 2 or abs(last - (t0 + (n - 1) * step_s)) > step_s / 2:
            return None
        return np.array([p[1] for p in raw], dtype=np.float64)
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def _labels(series: Any) -> dict[str, str]:
    metric = series.get("metric") if isinstance(series, dict) else None
    if not isinstance(metric, dict):
        return {}
    return {str(k): str(v) for k, v in metric.items()}


class PrometheusClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._http = httpx.Client(timeout=timeout_s)

    def _fetch(self, query: str, start: float, end: float, step_s: float) -> list[Any]:
        params = {
            "query": query,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step_s:.3f}",
            "timeout": f"{self._timeout_s:.0f}s",
        }
        try:
            reply = self._http.post(f"{self._base}/api/v1/query_range", data=params)
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"Prometheus at {self._base} timed out after {self._timeout_s:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"Prometheus at {self._base} unreachable: {exc}") from exc
        try:
            body = orjson.loads(reply.content)
        except orjson.JSONDecodeError as exc:
            raise Unavailable(
                f"Prometheus at {self._base} answered HTTP {reply.status_code} without JSON"
            ) from exc
        if not isinstance(body, dict):
            raise Unavailable(f"Prometheus at {self._base} answered an unexpected JSON shape")
        if body.get("status") != "success":
            kind, text = body.get("errorType", ""), body.get("error", reply.text)
            if kind in ("bad_data", "execution") or reply.status_code in (400, 422):
                raise InvalidArgument.one(
                    "query", f"Prometheus refused it: {text}", reason="BAD_QUERY"
                )
            raise Unavailable(f"Prometheus error ({kind or reply.status_code}): {text}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise Unavailable(f"Prometheus at {self._base} answered without data")
        if data.get("resultType") != "matrix":
            raise InvalidArgument.one(
                "query", f"gave a {data.get('resultType')}, not a range vector"
            )
        result = data.get("result")
        return result if isinstance(result, list) else []

    def query_range(
        self,
        query: str,
        start: datetime,
        end: datetime,
        step_s: float,
        max_series: int,
        *,
        max_points: int = 0,
    ) -> RangeResult:
        t0 = start.timestamp()
        n = round((end.timestamp() - t0) / step_s) + 1
        result = self._fetch(query, t0, end.timestamp(), step_s)
        self._check(len(result), n, max_series, max_points)
        values = np.full((len(result), n), np.nan)
        labels = []
        for i, series in enumerate(result):
            labels.append(_labels(series))
            raw = series.get("values") if isinstance(series, dict) else None
            if raw:
                self._fill(values[i], raw, t0, step_s, n)
        return RangeResult(labels, values, t0, step_s)

    def query_range_chunked(
        self,
        query: str,
        start: datetime,
        end: datetime,
        step_s: float,
        *,
        max_series: int,
        max_points: int,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> RangeResult:
        """Like :meth:`query_range` for ranges longer than one query may return. Between
        chunks it asks ``keep_going`` (is the caller still there?) and raises
        :class:`Cancelled` when not, so a long range stops with its caller."""
        t0 = start.timestamp()
        n = round((end.timestamp() - t0) / step_s) + 1
        index: dict[tuple[tuple[str, str], ...], int] = {}
        labels: list[dict[str, str]] = []
        rows: list[FloatArray] = []
        for c in range(0, n, CHUNK_POINTS):
            if not keep_going():
                raise Cancelled(f"the caller went away after {c:,} of {n:,} points")
            c_end = min(n, c + CHUNK_POINTS) - 1
            result = self._fetch(query, t0 + c * step_s, t0 + c_end * step_s, step_s)
            for series in result:
                lab = _labels(series)
                key = tuple(sorted(lab.items()))
                i = index.get(key)
                if i is None:
                    i = index[key] = len(labels)
                    labels.append(lab)
                    self._check(len(labels), n, max_series, max_points)
                    rows.append(np.full(n, np.nan))
                raw = series.get("values") if isinstance(series, dict) else None
                if raw:
                    self._fill(rows[i][c : c_end + 1], raw, t0 + c * step_s, step_s, c_end - c + 1)
            del result
        values = np.stack(rows) if rows else np.zeros((0, n))
        return RangeResult(labels, values, t0, step_s)

    @staticmethod
    def _check(series: int, points: int, max_series: int, max_points: int) -> None:
        if series > max_series:
            raise InvalidArgument.one(
                "query",
                f"returned {series} series; at most {max_series}: narrow it with label matchers",
            )
        if max_points and series * points > max_points:
            raise ResourceExhausted(
                "query",
                f"{series:,} series x {points:,} points is over the per-call limit of "
                f"{max_points:,} points (MAX_WORK_POINTS): narrow the query or the range",
            )

    @staticmethod
    def _fill(row: FloatArray, raw: Any, t0: float, step_s: float, n: int) -> None:
        """Put one series' ``[[t, "v"], ...]`` into its row of the grid."""
        if isinstance(raw, list) and len(raw) == n:
            full = _full_row(raw, t0, step_s, n)
            if full is not None and full.shape == (n,):
                row[:] = np.where(np.isfinite(full), full, np.nan)
                return
        PrometheusClient._place(row, _pairs(raw), t0, step_s, n)

    @staticmethod
    def _place(row: FloatArray, pairs: FloatArray, t0: float, step_s: float, n: int) -> None:
        with np.errstate(invalid="ignore"):
            k = np.rint((pairs[:, 0] - t0) / step_s)
        ok = np.isfinite(k) & np.isfinite(pairs[:, 1])
        k = k[ok].astype(np.int64)
        v = pairs[ok, 1]
        keep = (k >= 0) & (k < n)
        row[k[keep]] = v[keep]

    def close(self) -> None:
        self._http.close()
