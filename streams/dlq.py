"""Dead-letter records: the original key and bytes, the reason in headers."""

from __future__ import annotations

from typing import Sequence

from streams.events import format_ts
from streams.kafka_types import KafkaMessage

MAX_ERROR_MESSAGE = 1000


def dlq_headers(msg: KafkaMessage, error: BaseException, pipeline: str, now_s: float) -> list[tuple[str, bytes]]:
    """DESIGN.md's DLQ headers, after the original record's own headers."""
    original: Sequence[tuple[str, bytes]] = msg.headers() or []
    text = str(error)[:MAX_ERROR_MESSAGE]
    return [
        *original,
        ("error.class", type(error).__name__.encode()),
        ("error.message", text.encode("utf-8", "backslashreplace")),
        ("source.topic", (msg.topic() or "").encode()),
        ("source.partition", str(msg.partition()).encode()),
        ("source.offset", str(msg.offset()).encode()),
        ("pipeline", pipeline.encode()),
        ("failed_at", format_ts(now_s).encode()),
    ]
