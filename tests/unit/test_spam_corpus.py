"""SpamAssassin corpus parsing: real files, crafted nasty RFC 822 bytes, the split."""

from __future__ import annotations

import base64
import time
from collections import Counter

import orjson

from models.corpus import (
    EXPECTED_COUNTS,
    FALLBACK_TS_S,
    MAX_BODY_CHARS,
    UNDISCLOSED,
    UNKNOWN_SENDER,
    corpus_files,
    load_corpus,
    md5_of,
    parse_message,
    split_of,
)
from streams.events import decode_email, format_ts, parse_ts

from tests.stack import spam_corpus




def roundtrip(event: dict):
    return decode_email(orjson.dumps(event))


# ---------------------------------------------------------------- real files


def test_corpus_layout_and_counts() -> None:
    files = corpus_files(spam_corpus())
    labels = Counter("spam" if n.startswith("spam-") else "ham" for n, _ in files)
    assert dict(labels) == EXPECTED_COUNTS
    folders = {n.split("/")[0] for n, _ in files}
    assert folders == {"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}
    name = files[0][0]
    assert name.count("/") == 1 and name.endswith(".txt") and len(md5_of(name)) == 32


def test_handful_of_real_messages_parse_into_valid_events() -> None:
    corpus = spam_corpus()
    files = corpus_files(corpus)
    by_folder: dict[str, list[str]] = {}
    for n, _ in files:
        by_folder.setdefault(n.split("/")[0], []).append(n)
    names = [v[i] for v in by_folder.values() for i in (0, 1, len(v) // 2, len(v) - 1)]
    msgs = load_corpus(corpus, names)
    assert len(msgs) == len(names)
    for m in msgs:
        e = roundtrip(m.event)
        assert e.event_id == f"em-{md5_of(m.file_name)}"
        assert m.label == (1 if m.file_name.startswith("spam-") else 0)
        assert "@" in e.sender and e.sender == e.sender.lower()
        assert e.recipients and all(e.recipients)
        assert e.subject or e.body
        assert 631_152_000 <= e.ts_s < 1_893_456_000
        assert all(isinstance(v, str) for v in e.headers.values())


def test_known_html_spam_is_stripped_to_text_with_urls() -> None:
    corpus = spam_corpus()
    name = next(n for n, _ in corpus_files(corpus) if n.startswith("spam-1/00001."))
    (m,) = load_corpus(corpus, [name])
    e = roundtrip(m.event)
    assert m.label == 1
    assert e.subject == "Life Insurance - Why Pay More?"
    assert e.sender == "12a1mailbot1@web.de"
    assert e.recipients == ["dcek1a1@netsgo.com"]
    assert "Save up to 70% on Life Insurance." in e.body
    assert "<TABLE" not in e.body and "=3D" not in e.body
    assert "http://website.e365.cc/savequote/" in e.urls
    assert e.headers["content-type"] == "text/html"
    # Date: Wed, 21 Aug 2002 20:31:57 -1600
    assert m.event["ts"] == "2002-08-22T12:31:57.000Z"


def test_whole_corpus_loads_quickly_and_every_event_decodes() -> None:
    corpus = spam_corpus()
    t0 = time.perf_counter()
    msgs = load_corpus(corpus)
    elapsed = time.perf_counter() - t0
    assert len(msgs) == sum(EXPECTED_COUNTS.values())
    assert elapsed < 30, f"parsing the corpus took {elapsed:.1f}s"
    ids = set()
    for m in msgs:
        e = roundtrip(m.event)
        ids.add(e.event_id)
        assert len(e.body) <= MAX_BODY_CHARS
    # Most messages must have a real date, a sender and recipients.
    assert sum(m.event["ts"] == format_ts(FALLBACK_TS_S) for m in msgs) < 10
    assert sum(m.event["from"] == UNKNOWN_SENDER for m in msgs) < 10
    assert sum(m.event["to"] == [UNDISCLOSED] for m in msgs) < 400
    assert len(ids) >= len(msgs) - 5  # a few exact duplicates share an md5


# ---------------------------------------------------------------- crafted bytes


def parse(raw: bytes, name: str = "spam-1/00001.0123456789abcdef0123456789abcdef.txt"):
    event = parse_message(raw, name)
    return event, roundtrip(event)


def test_bad_charset_and_8bit_headers_do_not_crash() -> None:
    raw = (
        b"From: Jos\xe9 <JOSE@Example.COM>\n"
        b"To: x@y.example\n"
        b"Subject: caf\xe9 \xff\xfe special\n"
        b"Date: Mon, 2 Sep 2002 10:00:00 +0000\n"
        b'Content-Type: text/plain; charset="x-no-such-charset"\n'
        b"\n"
        b"caf\xe9 au lait \x00 with a NUL\n"
    )
    event, e = parse(raw)
    assert e.sender == "jose@example.com"
    assert e.subject.startswith("caf") and "special" in e.subject
    assert e.body.startswith("caf") and "au lait" in e.body and "\x00" not in e.body
    assert e.event_id == "em-0123456789abcdef0123456789abcdef"
    assert event["ts"] == "2002-09-02T10:00:00.000Z"


def test_rfc2047_subjects_including_broken_ones() -> None:
    good = base64.b64encode("Grüße aus Köln".encode()).decode()
    raw = (f"From: a@b.example\nTo: c@d.example\nSubject: =?utf-8?b?{good}?=\n"
           "Date: Mon, 2 Sep 2002 10:00:00 +0000\n\nhi\n").encode()
    _, e = parse(raw)
    assert e.subject == "Grüße aus Köln"
    raw = (b"From: a@b.example\nTo: c@d.example\nSubject: =?bogus-cs?q?hello=20there?= =?utf-8?b?!!!?=\n"
           b"Date: Mon, 2 Sep 2002 10:00:00 +0000\n\nhi\n")
    _, e = parse(raw)
    assert "hello" in e.subject


def test_no_date_no_to_uses_documented_fallbacks() -> None:
    raw = b"From: a@b.example\nSubject: no date\n\nbody\n"
    event, e = parse(raw)
    assert e.recipients == [UNDISCLOSED]
    assert e.ts_s == FALLBACK_TS_S
    # An unparseable Date falls back to the mbox From_ line ...
    raw = b"From a@b.example  Thu Aug 22 12:36:23 2002\nFrom: a@b.example\nDate: yesterday-ish\nSubject: s\n\nb\n"
    _, e = parse(raw)
    assert e.ts_s == parse_ts("2002-08-22T12:36:23Z")
    # ... then to the topmost Received header's date.
    raw = (b"Received: from x by y; Fri, 19 Jul 2002 08:28:19 +0100\nFrom: a@b.example\n"
           b"Date: Thu, 18 Jul 0102 19:51:35 -0100\nSubject: s\n\nb\n")
    _, e = parse(raw)
    assert e.ts_s == parse_ts("2002-07-19T07:28:19Z")


def test_html_only_message_becomes_text() -> None:
    raw = (
        b"From: Promo <PROMO@Deals.example>\nTo: <u@x.example>, v@x.example\nSubject: WIN $$$\n"
        b"Date: Mon, 2 Sep 2002 10:00:00 +0000\nContent-Type: text/html; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n"
        b"<html><head><style>p {color: red}</style><script>alert(1)</script></head>"
        b"<body><p>Click &amp; <b>win</b> =E9t=E9</p><a href=3D\"http://1.2.3.4/x?a=3Db\">here</a>"
        b"<!-- hidden comment --></body></html>\n"
    )
    _, e = parse(raw)
    assert e.recipients == ["u@x.example", "v@x.example"]
    assert "Click & win été" in " ".join(e.body.split())
    assert "alert" not in e.body and "color" not in e.body and "hidden" not in e.body and "<" not in e.body
    assert e.urls == ["http://1.2.3.4/x?a=b"]
    assert e.headers["content-type"] == "text/html"


def test_attachments_are_listed_not_read_as_body() -> None:
    payload = base64.b64encode(b"MZ" + b"\x00" * 98).decode()
    raw = (
        "From: a@b.example\nTo: c@d.example\nSubject: invoice\nDate: Mon, 2 Sep 2002 10:00:00 +0000\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="BND"\n\n'
        "--BND\nContent-Type: text/plain; charset=utf-8\n\nplease see attached http://a.example/p.\n"
        '--BND\nContent-Type: application/octet-stream; name="evil.exe"\n'
        'Content-Disposition: attachment; filename="evil.exe"\nContent-Transfer-Encoding: base64\n\n'
        f"{payload}\n--BND--\n"
    ).encode()
    _, e = parse(raw)
    assert e.body == "please see attached http://a.example/p."
    assert e.urls == ["http://a.example/p"]
    assert e.attachments == [{"filename": "evil.exe", "content_type": "application/octet-stream", "size": 100}]


def test_broken_multipart_and_garbage_never_raise() -> None:
    raw = (b'From: a@b.example\nTo: c@d.example\nSubject: s\nContent-Type: multipart/alternative; boundary="=B 1"\n\n'
           b"--= B 1\nContent-Type: text/html\n\n<p>cheap <b>ink</b></p>\n--= B 1--\n")
    _, e = parse(raw)
    assert "cheap" in e.body and "ink" in e.body and "<p>" not in e.body
    for junk in (b"", b"\x00\xff\xfe\x80" * 50, b"\n\n\n", b"Subject:\n\n", b"From: \xff\n\n\xff",
                 b"Content-Type: multipart/mixed\n\n--x\n", b"Content-Type: text/plain; charset=\"\"\n\n\xe9"):
        event, e = parse(junk)  # decode_email accepts it
        assert e.sender and e.recipients and (e.subject or e.body)


def test_huge_body_is_capped() -> None:
    raw = b"From: a@b.example\nTo: c@d.example\nSubject: s\n\n" + b"word " * 100_000
    _, e = parse(raw)
    assert len(e.body) <= MAX_BODY_CHARS


# ---------------------------------------------------------------- split


def test_split_is_deterministic_about_80_20_and_depends_on_md5_only() -> None:
    names = [n for n, _ in corpus_files(spam_corpus())]
    first = [split_of(n) for n in names]
    assert first == [split_of(n) for n in names]
    frac = first.count("test") / len(names)
    assert 0.17 < frac < 0.23, frac
    for label in ("ham", "spam"):
        sub = [s for n, s in zip(names, first) if n.startswith("spam-") == (label == "spam")]
        assert 0.15 < sub.count("test") / len(sub) < 0.25
    n = names[0]
    moved = "spam-2/99999." + md5_of(n) + ".txt"
    assert split_of(moved) == split_of(n)
    # pinned values: a change of split rule must be deliberate (it moves the test set)
    pinned = {"0" * 32: "train", "2" * 32: "test", "7c53336b37003a9286aba55d2945844c": "train",
              "7848dde101aa985090474a91ec93fcf0": "test"}
    assert {h: split_of(f"x/00001.{h}.txt") for h in pinned} == pinned
