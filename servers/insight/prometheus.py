"""A small Prometheus HTTP API client (httpx): range queries aligned to a grid."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import httpx
import numpy as np
from neuralops.servers.errors import InvalidArgument, Unavailable
from neuralops.servers.insight.scoring import FloatArray
from neuralops.servers.insight.validation import sample_pairs


@dataclass(frozen=True)
class RangeResult:
    labels: list[dict[str, str]]
    values: FloatArray  # [series, step], NaN where absent
    start: float
    step: float


class PrometheusClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._http = httpx.Client(timeout=timeout_s)

    def query_range(
        self, query: str, start: datetime, end: datetime, step_s: float, max_series: int
    ) -> RangeResult:
        params = {
            "query": query,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
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
            body = reply.json()
        except ValueError as exc:
            raise Unavailable(
                f"Prometheus at {self._base} answered HTTP {reply.status_code} without JSON"
            ) from exc
        if body.get("status") != "success":
            kind, text = body.get("errorType", ""), body.get("error", reply.text)
            if kind in ("bad_data", "execution") or reply.status_code in (400, 422):
                raise InvalidArgument.one(
                    "query", f"Prometheus refused it: {text}", reason="BAD_QUERY"
                )
            raise Unavailable(f"Prometheus error ({kind or reply.status_code}): {text}")
        data = body["data"]
        if data.get("resultType") != "matrix":
            raise InvalidArgument.one(
                "query", f"gave a {data.get('resultType')}, not a range vector"
            )
        result = data["result"]
        if len(result) > max_series:
            raise InvalidArgument.one(
                "query",
                f"returned {len(result)} series; at most {max_series}: narrow it with label matchers",
            )
        t0 = start.timestamp()
        n = round((end.timestamp() - t0) / step_s) + 1
        values = np.full((len(result), n), np.nan)
        for i, series in enumerate(result):
            raw = series.get("values") or []
            if not raw:
                continue
            # Prometheus sends [[unix_seconds, "value"], ...]; numpy parses the strings
            # ("NaN", "+Inf" included) in one go.
            pairs = sample_pairs(raw, i)
            k = np.rint((pairs[:, 0] - t0) / step_s).astype(np.int64)
            keep = (k >= 0) & (k < n) & np.isfinite(pairs[:, 1])
            values[i, k[keep]] = pairs[keep, 1]
        return RangeResult([dict(s.get("metric", {})) for s in result], values, t0, step_s)

    def close(self) -> None:
        self._http.close()
