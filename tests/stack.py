"""Finding the real Kafka broker and Redis for integration tests.

testcontainers when a Docker engine answers; otherwise the local stack that
``ops/stack.sh`` runs (started here if it is not up). Never a mock.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from contextlib import contextmanager

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    redis_url: str
    kind: str

    def env(self, prefix: str, partitions: int = 6, **extra: str) -> dict[str, str]:
        """The environment a streaminfer process needs to run against this stack, isolated
        by ``prefix`` (topics, consumer groups) and its own feature namespace."""
        return {**os.environ, "STREAMINFER_KAFKA_BOOTSTRAP": self.bootstrap, "STREAMINFER_REDIS_URL": self.redis_url,
                "STREAMINFER_TOPIC_PREFIX": prefix, "STREAMINFER_FEATURE_NAMESPACE": prefix + "ns",
                "STREAMINFER_PARTITIONS": str(partitions), **extra}


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def _port_open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def real_stack() -> Iterator[Stack]:
    if os.environ.get("STREAMINFER_TEST_STACK", "auto") != "local" and _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as kafka, RedisContainer("redis:7") as rc:
            url = f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
            yield Stack(kafka.get_bootstrap_server(), url, "testcontainers")
        return
    bootstrap = os.environ.get("STREAMINFER_KAFKA_BOOTSTRAP", "localhost:9092")
    redis_url = os.environ.get("STREAMINFER_REDIS_URL", "redis://localhost:6379/0")
    if not _port_open(bootstrap):
        subprocess.run([str(ROOT / "ops" / "stack.sh"), "up"], check=True)
    yield Stack(bootstrap, redis_url, "local")


def spam_corpus() -> Path:
    """The SpamAssassin corpus (env STREAMINFER_SPAM_CORPUS, default data/spamassassin).

    Tests that need it fail when it is missing, never skip: ops/test.sh fetches it.
    """
    import pytest

    from models.corpus import corpus_root

    path = Path(os.environ.get("STREAMINFER_SPAM_CORPUS", ROOT / "data" / "spamassassin"))
    try:
        corpus_root(path)
    except FileNotFoundError as exc:
        pytest.fail(f"SpamAssassin corpus missing: {exc}. Run ./ops/test.sh (it fetches it) or set "
                    "STREAMINFER_SPAM_CORPUS")
    return path


def wait_for(pred: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval_s)
    return bool(pred())
