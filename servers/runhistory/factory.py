"""Wires RunHistory: storage, embeddings (when configured), the outbox relay, the servicer."""

from __future__ import annotations

import logging

import grpc
from neuralops.runhistory.v1 import runhistory_pb2, runhistory_pb2_grpc
from neuralops.servers.runhistory.embeddings import Embedder, EmbeddingService, VectorIndex
from neuralops.servers.runhistory.model import LogResult, NewRun
from neuralops.servers.runhistory.relay import OutboxRelay
from neuralops.servers.runhistory.service import RunHistory
from neuralops.servers.runhistory.servicer import RunHistoryServicer
from neuralops.servers.runhistory.storage import RunStore
from neuralops.servers.runtime import auth, metrics
from neuralops.servers.runtime.app import ServiceParts
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database
from neuralops.servers.runtime.services import ServiceContext
from neuralops.servers.runtime.worker import Worker

log = logging.getLogger(__name__)


def build_runhistory(
    config: Config, db: Database, registry_addr: str, relay_backoff_s: float = 30.0
) -> ServiceParts:
    store = RunStore(db, embeddings_enabled=config.embeddings_enabled)
    workers: list[Worker] = []
    closers = []
    embedding: EmbeddingService | None = None
    if config.openai_key:
        embedder = Embedder(config.openai_key, config.openai_base_url, config.embedding_model)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        index = VectorIndex(config.milvus_uri)
        embedding = EmbeddingService(store, embedder, index)
        embed_worker = Worker("embeddings", embedding.step, idle_s=1.0)
        workers.append(embed_worker)
        closers.append(embedding.close)
        log.info(
            "embeddings on: model %s, vectors in %s", config.embedding_model, config.milvus_uri
        )
    else:
        embed_worker = None
        log.warning(
            "embeddings skipped: OPENAI_KEY / OPENAI_API_KEY not set (SearchRuns answers FAILED_PRECONDITION)"
        )

    relay = OutboxRelay(
        db,
        registry_addr,
        max_backoff_s=relay_backoff_s,
        security=auth.client_security(config),
    )
    relay_worker = Worker("outbox-relay", relay.step, idle_s=1.0)
    workers.append(relay_worker)
    closers.append(relay.close)

    def on_stored(runs: list[NewRun], results: list[LogResult]) -> None:
        stored = [
            (run.wpk_id, run.status, run.duration_ms)
            for run, result in zip(runs, results, strict=True)
            if result.created
        ]
        metrics.observe_runs(stored)
        if len(stored) < len(runs):
            metrics.RUNS_ALREADY_STORED.inc(len(runs) - len(stored))
        relay_worker.wake()
        if embed_worker is not None:
            embed_worker.wake()

    history = RunHistory(store, embedding, on_stored)
    servicer = RunHistoryServicer(history)

    def register(server: grpc.Server) -> None:
        runhistory_pb2_grpc.add_RunHistoryServiceServicer_to_server(servicer, server)

    full_name = runhistory_pb2.DESCRIPTOR.services_by_name["RunHistoryService"].full_name
    return ServiceParts("runhistory", full_name, register, workers, closers)


def build(ctx: ServiceContext) -> ServiceParts:
    """RunHistory as servers/runtime/services.py starts it: its outbox relays to the
    Registry where it answers (started before RunHistory, in this process or not)."""
    return build_runhistory(ctx.config, ctx.db, ctx.address("registry"), ctx.relay_backoff_s)
