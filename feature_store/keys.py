"""Redis key encoding, in one place.

Keys look like ``si:<namespace>:<view>:{<entity id>}``. The braces are a Redis
Cluster hash tag, so every view of one entity lands in the same slot. Characters
that would break the tag or the separators (``{``, ``}``, ``:``, ``%``, and
control bytes) are percent-encoded, so distinct ids always give distinct keys.
"""

from __future__ import annotations

import re
from functools import lru_cache

_UNSAFE = frozenset("{}:%") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
# Keys are built several times per event on the hot path: a C-level search first.
_UNSAFE_RE = re.compile(r"[{}:%\x00-\x1f\x7f]")


def _escape(text: str) -> str:
    if _UNSAFE_RE.search(text) is None:
        return text
    return "".join(f"%{ord(ch):02X}" if ch in _UNSAFE else ch for ch in text)


@lru_cache(maxsize=1 << 16)
def feature_key(namespace: str, view: str, entity_id: str) -> bytes:
    """The Redis key of one entity's values in one feature view."""
    if not namespace or not view:
        raise ValueError("namespace and view must be non-empty")
    return f"si:{_escape(namespace)}:{_escape(view)}:{{{_escape(entity_id)}}}".encode()


def namespace_pattern(namespace: str) -> bytes:
    """A SCAN MATCH pattern covering every key of a namespace."""
    ns = _escape(namespace)
    for ch in "\\*?[]":
        ns = ns.replace(ch, "\\" + ch)
    return f"si:{ns}:*".encode()


@lru_cache(maxsize=1 << 16)
def applied_key(namespace: str, view: str, entity_id: str, day: int) -> bytes:
    """The per-entity, per-day set (a hash: event id -> contribution) of events already
    counted into a stream view; it shares the entity's hash tag (same cluster slot)."""
    return feature_key(namespace, view + ".applied", entity_id) + b":%d" % day


def watermark_key(namespace: str, stream: str) -> bytes:
    """A label stream's watermark (newest label time materialised), per namespace."""
    return feature_key(namespace, "watermark", stream)
