"""Records that must end in the DLQ, each with a name saying what is wrong."""

from __future__ import annotations

import orjson

from streams.events import MAX_EMAIL_BYTES, MAX_TRANSACTION_BYTES


def poison_transactions() -> list[tuple[str, bytes | None, bytes | None]]:
    """(name, key, value) triples."""
    good = {"event_id": "bad", "ts": "2026-11-22T11:32:21Z", "card_id": "c-1", "terminal_id": "t-1", "amount": 1.0}

    def with_(**kw: object) -> bytes:
        return orjson.dumps({**good, **kw})

    def without(field: str) -> bytes:
        return orjson.dumps({k: v for k, v in good.items() if k != field})

    return [
        ("malformed-json", b"c-1", b'{"event_id": "x", "amount": '),
        ("not-an-object", b"c-1", b"[1, 2, 3]"),
        ("wrong-type-amount", b"c-1", with_(amount="42.0")),
        ("wrong-type-card", b"c-1", with_(card_id=17)),
        ("missing-card", b"c-1", without("card_id")),
        ("missing-ts", b"c-1", without("ts")),
        ("nan", b"c-1", b'{"event_id":"n","ts":"2026-11-22T11:32:21Z","card_id":"c","terminal_id":"t","amount":NaN}'),
        ("infinity", b"c-1", b'{"event_id":"n","ts":"2026-11-22T11:32:21Z","card_id":"c","terminal_id":"t","amount":1e309}'),
        ("negative-amount", b"c-1", with_(amount=-3)),
        ("oversize", b"c-1", with_(pad="x" * (MAX_TRANSACTION_BYTES + 1))),
        ("invalid-utf8", b"c-1", b'{"event_id": "\xff\xfe", "amount": 1}'),
        ("lone-surrogate", b"c-1", b'{"event_id": "\\ud800", "ts": 1, "card_id": "c", "terminal_id": "t", "amount": 1}'),
        ("deep-nesting", b"c-1", b"[" * 3000 + b"]" * 3000),
        ("empty-value", b"c-1", b""),
        ("null-value", b"c-1", None),
        ("null-key-empty-object", None, b"{}"),
        ("bad-ts", b"c-1", with_(ts="yesterday")),
        ("huge-string", b"c-1", with_(card_id="c" * 100_000)),
        ("long-id", b"c-1", with_(terminal_id="t" * 300)),
        ("empty-event-id", b"c-1", with_(event_id="")),
        ("empty-object-amount", b"c-1", with_(amount={})),
        ("null-amount", b"c-1", with_(amount=None)),
        ("bool-amount", b"c-1", with_(amount=True)),
        ("big-int-ts", b"c-1", b'{"event_id":"e","ts":1000000000000000000000000000000,"card_id":"c","terminal_id":"t","amount":1}'),
        ("escaped-nul", b"c-1", rb'{"event_id": "\u0000", "amount": [}'),
        ("binary-garbage", b"\x00\x01", bytes(range(256))),
    ]


def poison_emails() -> list[tuple[str, bytes | None, bytes | None]]:
    good = {"event_id": "bad", "ts": "2026-11-22T11:32:21Z", "from": "a@b.example", "to": ["x@y.example"],
            "subject": "s", "body": "b"}

    def with_(**kw: object) -> bytes:
        return orjson.dumps({**good, **kw})

    return [
        ("malformed-json", b"x@y.example", b'{"from": "a@b'),
        ("empty-to", b"x@y.example", with_(to=[])),
        ("no-subject-no-body", b"x@y.example", with_(subject=None, body=None)),
        ("wrong-type-to", b"x@y.example", with_(to="x@y.example")),
        ("oversize", b"x@y.example", with_(body="x" * (MAX_EMAIL_BYTES + 1))),
        ("nan", b"x@y.example", b'{"event_id":"n","ts":NaN,"from":"a@b","to":["x@y"],"subject":"s"}'),
        ("invalid-utf8", b"x@y.example", b'{"subject": "\xc3\x28"}'),
        ("null-value", None, None),
        ("lone-surrogate", b"x@y.example", b'{"event_id":"e","ts":1,"from":"\\udc00","to":["x@y"],"subject":"s"}'),
        ("deep-nesting", b"x@y.example", b'{"a":' * 2000 + b'1' + b'}' * 2000),
        ("huge-subject", b"x@y.example", with_(subject="s" * 5000)),
        ("attachment-nan-size", b"x@y.example", b'{"event_id":"e","ts":1,"from":"a@b","to":["x@y"],"subject":"s",'
                                               b'"attachments":[{"size":1e999}]}'),
        ("to-with-empty-address", None, with_(to=[""])),
    ]
