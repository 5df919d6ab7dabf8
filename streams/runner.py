"""Starting workers: one process, or N processes in one consumer group."""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
from typing import Any

from confluent_kafka import KafkaException

from feature_store.store import FeatureStore, connect
from streams.kafka_admin import ensure_topics
from streams.pipelines import build_scorer, topics_for
from streams.settings import Settings, redact_url
from streams.worker import Worker, WorkerStats

log = logging.getLogger(__name__)


def group_id_for(settings: Settings, pipeline: str) -> str:
    return f"{settings.topic_prefix}streaminfer-{pipeline}"


def transactional_id_for(settings: Settings, pipeline: str, worker_index: int) -> str:
    """Stable per (group, host, index): a restarted worker fences its predecessor."""
    return f"{group_id_for(settings, pipeline)}.{socket.gethostname()}.{worker_index}"


def _ensure_topics_waiting(settings: Settings, names: tuple[str, ...], stop_event: threading.Event | None) -> None:
    """Create the topics, waiting for the broker with backoff instead of exiting:
    a worker started during a broker outage must not become a crash loop."""
    stop = stop_event if stop_event is not None else threading.Event()
    backoff = 1.0
    while True:
        try:
            ensure_topics(settings.kafka_config(), names, settings.partitions, settings.replication_factor,
                          timeout_s=10)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or stop.is_set():
                raise
            log.warning("creating topics: broker unavailable (%s); retrying in %.0fs", err, backoff)
            if stop.wait(backoff):
                return  # a stop request: the worker loop then ends at once, exit 0
            backoff = min(backoff * 2, 10.0)


def build_worker(settings: Settings, pipeline: str, *, model_version: str | None = None,
                 exactly_once: bool = False, worker_index: int = 0, stop_event: threading.Event | None = None
                 ) -> Worker:
    topics = topics_for(pipeline, settings.topic_prefix)
    _ensure_topics_waiting(settings, topics.all(), stop_event)
    store = FeatureStore(connect(settings.redis_url.get(), settings.redis_timeout_s), settings.feature_namespace,
                         on_unavailable=settings.on_redis_down(pipeline), retry_after_s=settings.redis_retry_after_s)
    scorer = build_scorer(pipeline, store, str(settings.model_dir), settings.device, settings.emit_features, model_version)
    client_id = f"streaminfer-{pipeline}-{socket.gethostname()}-{os.getpid()}"
    txn_id = transactional_id_for(settings, pipeline, worker_index) if exactly_once else None
    log.info("%s worker: kafka=%s redis=%s model=%s/%s group=%s mode=%s", pipeline, settings.kafka_bootstrap,
             redact_url(settings.redis_url.get()), scorer.model_name, scorer.model_version,
             group_id_for(settings, pipeline), f"exactly-once ({txn_id})" if txn_id else "at-least-once")
    return Worker(settings, scorer, topics, group_id_for(settings, pipeline), client_id, transactional_id=txn_id,
                  stop_event=stop_event)


def steady_state_gc() -> None:
    """Move what startup built (the model, the libraries) out of the collector's
    sight and collect young objects less often: a batch allocates many short-lived
    objects, and full collections over the long-lived heap were pure overhead."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def run_one(settings: Settings, pipeline: str, model_version: str | None = None, exactly_once: bool = False,
            worker_index: int = 0) -> WorkerStats:
    """Run one worker in this process until SIGTERM/SIGINT; then finish the batch, flush, commit.

    The handlers go in first, so a signal that arrives while the model loads or
    the producer initialises still ends the process cleanly (exit 0).
    """
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("%s worker: signal %d, finishing the batch", pipeline, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker = build_worker(settings, pipeline, model_version=model_version, exactly_once=exactly_once,
                          worker_index=worker_index, stop_event=stop)
    steady_state_gc()
    stats = worker.run()
    log.info("%s worker stopped: %s", pipeline, stats.as_dict())
    return stats


def _child(settings: Settings, pipeline: str, model_version: str | None, exactly_once: bool, index: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    run_one(settings, pipeline, model_version, exactly_once, index)


def run_many(settings: Settings, pipeline: str, workers: int, model_version: str | None = None,
             exactly_once: bool = False, first_index: int = 0) -> int:
    """N worker processes in one consumer group; signals are forwarded to them.

    Worker ``i`` gets index ``first_index + i`` (its transactional id in exactly-once mode).
    """
    if workers <= 1:
        run_one(settings, pipeline, model_version, exactly_once, first_index)
        return 0
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(settings, pipeline, model_version, exactly_once, first_index + i),
                         name=f"{pipeline}-{i}") for i in range(workers)]
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
