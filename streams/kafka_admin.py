"""Topic creation: every topic a pipeline touches exists before it runs."""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


def ensure_topics(conf: Mapping[str, str], names: Iterable[str], partitions: int, replication_factor: int,
                  timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics; returns those created. Existing ones are left as they are."""
    admin = AdminClient(dict(conf))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [n for n in dict.fromkeys(names) if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
            log.info("created topic %s (%d partitions)", name, partitions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
