"""Starting workers: one process, or N processes in one consumer group."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
from typing import Any

from feature_store.store import FeatureStore, connect
from streams.kafka_admin import ensure_topics
from streams.pipelines import build_scorer, topics_for
from streams.settings import Settings, redact_url
from streams.worker import Worker, WorkerStats

log = logging.getLogger(__name__)


def group_id_for(settings: Settings, pipeline: str) -> str:
    return f"{settings.topic_prefix}streaminfer-{pipeline}"


def build_worker(settings: Settings, pipeline: str, *, model_version: str | None = None) -> Worker:
    topics = topics_for(pipeline, settings.topic_prefix)
    ensure_topics(settings.kafka_config(), topics.all(), settings.partitions, settings.replication_factor)
    store = FeatureStore(connect(settings.redis_url.get(), settings.redis_timeout_s), settings.feature_namespace)
    scorer = build_scorer(pipeline, store, str(settings.model_dir), settings.device, settings.emit_features, model_version)
    client_id = f"streaminfer-{pipeline}-{socket.gethostname()}-{os.getpid()}"
    log.info("%s worker: kafka=%s redis=%s model=%s/%s group=%s", pipeline, settings.kafka_bootstrap,
             redact_url(settings.redis_url.get()), scorer.model_name, scorer.model_version, group_id_for(settings, pipeline))
    return Worker(settings, scorer, topics, group_id_for(settings, pipeline), client_id)


def run_one(settings: Settings, pipeline: str, model_version: str | None = None) -> WorkerStats:
    """Run one worker in this process until SIGTERM/SIGINT; then finish the batch, flush, commit."""
    worker = build_worker(settings, pipeline, model_version=model_version)

    def _stop(signum: int, _frame: Any) -> None:
        log.info("%s worker: signal %d, finishing the batch", pipeline, signum)
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = worker.run()
    log.info("%s worker stopped: %s", pipeline, stats.as_dict())
    return stats


def _child(settings: Settings, pipeline: str, model_version: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    run_one(settings, pipeline, model_version)


def run_many(settings: Settings, pipeline: str, workers: int, model_version: str | None = None) -> int:
    """N worker processes in one consumer group; signals are forwarded to them."""
    if workers <= 1:
        run_one(settings, pipeline, model_version)
        return 0
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(settings, pipeline, model_version), name=f"{pipeline}-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()

    def _forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)
