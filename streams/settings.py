"""Settings read explicitly from the environment into a frozen object.

Nothing reads the environment at import time: ``Settings.from_env()`` is called
by the CLI (or a test) and the result is passed down. Secrets (librdkafka
passwords and keys, a Redis URL with a password) are wrapped in ``Secret`` so a
log line or a repr never shows them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

PREFIX = "STREAMINFER_"
KAFKA_PROP_PREFIX = "STREAMINFER_KAFKA__"
_SECRET_WORDS = re.compile(r"password|secret|key|token|credential|jaas", re.I)


class Secret:
    """A string that does not show itself in repr/str; call ``.get()`` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    redis_url: Secret = field(default_factory=lambda: Secret("redis://localhost:6379/0"))
    model_dir: Path = Path("./artifacts")
    device: str = "auto"
    #: Extra librdkafka properties (e.g. SASL/TLS); values whose name looks secret are ``Secret``.
    kafka_extra: Mapping[str, str | Secret] = field(default_factory=dict)
    emit_features: bool = False
    #: Prepended to every topic and consumer-group name (isolates tests and tenants).
    topic_prefix: str = ""
    partitions: int = 6
    replication_factor: int = 1
    batch_max: int = 500
    batch_wait_ms: int = 5
    latency_budget_ms: float = 25.0
    feature_namespace: str = "prod"
    redis_timeout_s: float = 0.5
    #: Per pipeline, what to do while Redis is unavailable: ``defaults`` (decide with
    #: default features, marked in the decision) or ``pause`` (retry, commit nothing).
    fraud_on_redis_down: str = "defaults"
    spam_on_redis_down: str = "pause"
    redis_retry_after_s: float = 5.0
    shutdown_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        extra: dict[str, str | Secret] = {}
        for name, value in env.items():
            if name.startswith(KAFKA_PROP_PREFIX):
                prop = name[len(KAFKA_PROP_PREFIX):].lower().replace("_", ".")
                extra[prop] = Secret(value) if _SECRET_WORDS.search(prop) else value

        def get(name: str, default: str) -> str:
            return env.get(PREFIX + name, default)

        return cls(
            kafka_bootstrap=get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            redis_url=Secret(get("REDIS_URL", "redis://localhost:6379/0")),
            model_dir=Path(get("MODEL_DIR", "./artifacts")),
            device=get("DEVICE", cls.device),
            kafka_extra=extra,
            emit_features=_bool(get("EMIT_FEATURES", "0")),
            topic_prefix=get("TOPIC_PREFIX", ""),
            partitions=int(get("PARTITIONS", str(cls.partitions))),
            replication_factor=int(get("REPLICATION_FACTOR", str(cls.replication_factor))),
            batch_max=int(get("BATCH_MAX", str(cls.batch_max))),
            batch_wait_ms=int(get("BATCH_WAIT_MS", str(cls.batch_wait_ms))),
            latency_budget_ms=float(get("LATENCY_BUDGET_MS", str(cls.latency_budget_ms))),
            feature_namespace=get("FEATURE_NAMESPACE", cls.feature_namespace),
            redis_timeout_s=float(get("REDIS_TIMEOUT_S", str(cls.redis_timeout_s))),
            fraud_on_redis_down=get("FRAUD_ON_REDIS_DOWN", cls.fraud_on_redis_down),
            spam_on_redis_down=get("SPAM_ON_REDIS_DOWN", cls.spam_on_redis_down),
            redis_retry_after_s=float(get("REDIS_RETRY_AFTER_S", str(cls.redis_retry_after_s))),
            shutdown_timeout_s=float(get("SHUTDOWN_TIMEOUT_S", str(cls.shutdown_timeout_s))),
        )

    def kafka_config(self) -> dict[str, str]:
        """Base librdkafka config: bootstrap plus the operator's extra properties."""
        conf = {"bootstrap.servers": self.kafka_bootstrap}
        for k, v in self.kafka_extra.items():
            conf[k] = v.get() if isinstance(v, Secret) else v
        return conf

    def on_redis_down(self, pipeline: str) -> str:
        return {"fraud": self.fraud_on_redis_down, "spam": self.spam_on_redis_down}[pipeline]

    def topic(self, name: str) -> str:
        return self.topic_prefix + name
