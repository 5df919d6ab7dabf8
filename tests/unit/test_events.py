import math

import orjson
import pytest

from streams.errors import DecodeError, OversizeError, ValidationError
from streams.events import (MAX_TRANSACTION_BYTES, decode_email, decode_transaction, format_ts, parse_ts)

TX = {"event_id": "tx-1", "ts": "2026-11-22T11:32:21.123Z", "card_id": "c-17", "terminal_id": "t-9",
      "amount": 42.17, "currency": "USD", "mcc": 5411, "country": "US", "channel": "pos", "device_id": None, "ip": None}
EMAIL = {"event_id": "em-1", "ts": 1795347141123, "message_id": "<a@b>", "from": "a@b.example",
         "to": ["x@y.example"], "subject": "hi", "body": "hello", "headers": {"Received-SPF": "pass"},
         "urls": ["http://x.example/a"], "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "size": 1234}]}


def enc(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_transaction_decodes_and_keeps_unknown_fields() -> None:
    tx = decode_transaction(enc({**TX, "extra": {"nested": 1}}))
    assert (tx.event_id, tx.card_id, tx.terminal_id, tx.amount) == ("tx-1", "c-17", "t-9", 42.17)
    assert tx.ts_s == pytest.approx(1795347141.123)
    assert tx.raw["extra"] == {"nested": 1}


def test_ts_accepts_rfc3339_offsets_and_epoch_millis() -> None:
    assert parse_ts("2026-11-22T12:32:21.123+01:00") == pytest.approx(1795347141.123)
    assert parse_ts(1795347141123) == pytest.approx(1795347141.123)
    assert format_ts(parse_ts("2026-11-22T11:32:21.123Z")) == "2026-11-22T11:32:21.123Z"


@pytest.mark.parametrize("ts", ["yesterday", "2026-11-22T11:32:21", True, None, [1], -5, 1e20, "9" * 100])
def test_bad_ts_rejected(ts: object) -> None:
    with pytest.raises(ValidationError):
        decode_transaction(enc({**TX, "ts": ts}))


@pytest.mark.parametrize("field", ["event_id", "ts", "card_id", "terminal_id", "amount"])
def test_missing_required_field_named_in_error(field: str) -> None:
    obj = dict(TX)
    del obj[field]
    with pytest.raises(ValidationError, match=field):
        decode_transaction(enc(obj))


@pytest.mark.parametrize("amount", ["42", True, -0.01, None, [], {}])
def test_bad_amount_rejected(amount: object) -> None:
    with pytest.raises(ValidationError):
        decode_transaction(enc({**TX, "amount": amount}))


@pytest.mark.parametrize("raw", [b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": 1e309}',
                                 b'{"a": "\\ud800"}', b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000, b"", b"{", b"null"])
def test_invalid_json_and_non_finite_numbers_rejected(raw: bytes) -> None:
    with pytest.raises((DecodeError, ValidationError, OversizeError)):
        decode_transaction(raw)


def test_non_finite_after_parse_is_rejected() -> None:
    # orjson refuses NaN/Infinity literals and 1e309, but the check must not rely on that.
    from streams.events import _finite_number

    with pytest.raises(ValidationError, match="finite"):
        _finite_number({"amount": math.inf}, "amount")


def test_oversize_rejected_before_parsing() -> None:
    big = enc({**TX, "pad": "x" * MAX_TRANSACTION_BYTES})
    with pytest.raises(OversizeError):
        decode_transaction(big)


def test_empty_and_tombstone_and_non_object() -> None:
    with pytest.raises(DecodeError):
        decode_transaction(None)
    with pytest.raises(ValidationError, match="object"):
        decode_transaction(b"[1,2]")
    with pytest.raises(ValidationError, match="empty"):
        decode_transaction(enc({**TX, "card_id": ""}))


def test_email_decodes() -> None:
    em = decode_email(enc(EMAIL))
    assert em.sender == "a@b.example" and em.recipients == ["x@y.example"]
    assert em.headers == {"received-spf": "pass"}
    assert em.attachments[0]["size"] == 1234


@pytest.mark.parametrize("change, match", [
    ({"to": []}, "recipient"), ({"to": None}, "to"), ({"to": "x@y"}, "list"), ({"to": [1]}, "string"),
    ({"subject": None, "body": None}, "subject or a body"), ({"subject": "", "body": ""}, "subject or a body"),
    ({"from": None}, "from"), ({"headers": []}, "object"), ({"headers": {"a": 1}}, "string"),
    ({"attachments": [{"size": -1}]}, "size"), ({"urls": "http://x"}, "list"),
])
def test_bad_emails_rejected(change: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        decode_email(enc({**EMAIL, **change}))
