"""Run-output embeddings: OpenAI-compatible embeddings stored in Milvus.

The worker runs off the request path: LogRun marks a run ``pending`` and returns;
the worker embeds due runs in batches, upserts them into Milvus and marks them
``done``, or ``failed`` with a retry time (exponential backoff, bounded attempts).

When a dependency is down (the embeddings endpoint, or a Milvus server given by
``MILVUS_ENDPOINT``), the worker does not spend the runs' attempts: it leaves them
as they are and tries again after a backoff of its own (at most
:data:`MAX_PAUSE_S`), so a Milvus outage of any length loses no embedding.
SearchRuns answers UNAVAILABLE meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import openai
from neuralops.servers.runhistory.model import SearchHit
from neuralops.servers.runhistory.storage import RunStore
from neuralops.servers.runtime.db import utcnow
from neuralops.servers.runtime.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

COLLECTION = "workflow_runs"
MAX_TEXT = 8000
MAX_ATTEMPTS = 8
MAX_PAUSE_S = 10.0  # longest wait between tries while a dependency is down


class VectorStoreUnavailable(Unavailable):
    """The Milvus server cannot be reached (the runs wait without spending attempts)."""


class Embedder:
    """Text to vectors with the real ``openai`` client (any compatible endpoint)."""

    def __init__(
        self, api_key: str, base_url: str | None, model: str, timeout_s: float = 20.0
    ) -> None:
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=1
        )
        self.model = model

    def embed(self, texts: list[str]) -> list[list[float]]:
        try:
            reply = self._client.embeddings.create(
                model=self.model, input=[t[:MAX_TEXT] for t in texts]
            )
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.InternalServerError,
        ) as exc:
            raise Unavailable(f"embeddings endpoint unavailable: {exc}") from exc
        ordered = sorted(reply.data, key=lambda d: d.index)
        return [list(d.embedding) for d in ordered]

    def close(self) -> None:
        self._client.close()


class VectorIndex:
    """A Milvus collection of run-output vectors (Milvus Lite file or server URI).

    The collection is created on first upsert, with the dimension of the first
    vector, so any embedding model works without configuration."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._client: Any = None
        self._lock = threading.Lock()
        self._ready = False
        try:  # a Milvus server that is down now is connected to on first use
            with self._lock:
                self._connect()
        except Unavailable as exc:
            log.warning("%s", exc)

    def _connect(self) -> Any:
        """The client, connected (again, after a failure) under the lock."""
        if self._client is None:
            from pymilvus import MilvusClient

            try:
                # A server connection of our own: pymilvus' shared one can stay broken
                # after the server restarts, so each reconnect starts afresh.
                server = self._uri.startswith(("http://", "https://", "tcp://", "grpc://"))
                client = MilvusClient(self._uri, **({"dedicated": True} if server else {}))
                self._ready = client.has_collection(COLLECTION)
                if self._ready:  # a restarted Milvus server keeps collections unloaded
                    client.load_collection(COLLECTION)
            except Exception as exc:
                raise VectorStoreUnavailable(f"Milvus at {self._uri} unavailable: {exc}") from exc
            self._client = client
        return self._client

    def _failed(self, exc: Exception) -> VectorStoreUnavailable:
        """Drop the client after a failed call (the next call reconnects)."""
        client, self._client = self._client, None
        try:
            if client is not None:
                client.close()
        except Exception:
            log.debug("closing a failed Milvus client", exc_info=True)
        return VectorStoreUnavailable(f"Milvus at {self._uri} unavailable: {exc}")

    def _ensure(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        if self._ready:
            return
        client = self._connect()
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("wpk_id", DataType.VARCHAR, max_length=256)
        schema.add_field("run_id", DataType.VARCHAR, max_length=256)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT * 4)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self._client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(COLLECTION, schema=schema, index_params=index)
        self._ready = True

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            try:
                self._ensure(len(rows[0]["vector"]))
                self._connect().upsert(COLLECTION, rows)
            except Unavailable:
                raise
            except Exception as exc:
                raise self._failed(exc) from exc

    def search(self, vector: list[float], wpk_id: str, limit: int) -> list[SearchHit]:
        with self._lock:
            flt = f"wpk_id == {_milvus_str(wpk_id)}" if wpk_id else ""
            try:
                client = self._connect()
                if not self._ready:
                    return []
                found = client.search(
                    COLLECTION,
                    data=[vector],
                    limit=limit,
                    filter=flt,
                    output_fields=["wpk_id", "run_id", "text"],
                    # A run marked DONE is searchable at once, also on a Milvus server
                    # (whose default, Bounded, may lag a few seconds behind upserts).
                    consistency_level="Strong",
                )
            except Unavailable:
                raise
            except Exception as exc:
                raise self._failed(exc) from exc
        return [
            SearchHit(
                id=str(h["id"]),
                wpk_id=h["entity"]["wpk_id"],
                run_id=h["entity"]["run_id"],
                score=float(h["distance"]),
                text=h["entity"]["text"],
            )
            for h in found[0]
        ]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _milvus_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class EmbeddingService:
    """Embeds due runs (the worker's step) and answers searches."""

    def __init__(
        self, store: RunStore, embedder: Embedder, index: VectorIndex, batch: int = 32
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._index = index
        self._batch = batch
        self._pause = 0.0  # current backoff while a dependency is down
        self._paused_until = 0.0

    def step(self) -> bool:
        if time.monotonic() < self._paused_until:
            return False
        due = self._store.due_embeddings(self._batch, MAX_ATTEMPTS)
        if not due:
            return False
        ids = [d.id for d in due]
        try:
            vectors = self._embedder.embed([d.text for d in due])
            self._index.upsert(
                [
                    {
                        "id": d.id,
                        "wpk_id": d.wpk_id,
                        "run_id": d.run_id,
                        "text": d.text[:MAX_TEXT],
                        "vector": v,
                    }
                    for d, v in zip(due, vectors, strict=True)
                ]
            )
        except VectorStoreUnavailable as exc:
            # The runs are fine; the service behind them is not: keep their attempts.
            self._pause = min(MAX_PAUSE_S, max(0.5, self._pause * 2))
            self._paused_until = time.monotonic() + self._pause
            log.warning("embedding %d runs waits %.1fs: %s", len(ids), self._pause, exc)
            return False
        except Exception as exc:
            attempts = 1 + max(d.attempts for d in due)
            delay = timedelta(seconds=min(300.0, 2.0**attempts))
            log.warning("embedding %d runs failed, retrying in %s: %s", len(ids), delay, exc)
            self._store.mark_embedding_failed(ids, f"{type(exc).__name__}: {exc}", utcnow() + delay)
            return False
        self._pause = 0.0
        self._store.mark_embedded(ids)
        return True

    def search(self, text: str, wpk_id: str, limit: int) -> list[SearchHit]:
        vector = self._embedder.embed([text])[0]
        return self._index.search(vector, wpk_id, limit)

    def close(self) -> None:
        self._embedder.close()
        self._index.close()


def require(service: EmbeddingService | None) -> EmbeddingService:
    if service is None:
        raise FailedPrecondition(
            "semantic search needs embeddings: set OPENAI_KEY (or OPENAI_API_KEY) and restart",
            reason="EMBEDDINGS_DISABLED",
        )
    return service
