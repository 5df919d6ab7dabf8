"""The fast spam dense features equal the plain definitions they replaced, bit for bit.

The deployed model was trained on ``spam_dense_features`` rows, so its speed-ups
(byte-level letter counts, a plain-URL host pattern, an IP pre-check, one pass
over the window buckets) must not move any value. The reference below is the
function as it was before them, kept verbatim.
"""

from __future__ import annotations

import ipaddress
import math
import random
from urllib.parse import urlsplit

import orjson
import pytest

from feature_store import spam
from feature_store.spam import (
    BODY_SCAN_CHARS,
    MAX_URLS_SCANNED,
    REPORT_WINDOW_DAYS,
    WINDOWS_DAYS,
    _address,
    _executable,
    apply_email,
    sender_keys,
    spam_dense_features,
)
from feature_store.windows import DayWindows, day_of
from models.corpus import corpus_files, load_corpus, split_of
from streams.events import Email, decode_email

from tests.stack import spam_corpus


# ---------------------------------------------------------------- the reference (pre-change code)


def ref_upper_ratio(text: str) -> float:
    letters = sum(1 for c in text if c.isalpha())
    if not letters:
        return 0.0
    return sum(1 for c in text if c.isupper()) / letters


def ref_host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def ref_is_ip(host: str) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host.isdigit() or host.startswith("0x")


def ref_dense(email: Email, sender: DayWindows, domain: DayWindows,
              sender_reports: DayWindows | None = None, domain_reports: DayWindows | None = None) -> list[float]:
    subject = email.subject
    body = email.body
    scan = body[:BODY_SCAN_CHARS]
    h = email.headers
    subj_l = subject.lower().lstrip()
    urls = email.urls[:MAX_URLS_SCANNED]
    hosts = {ref_host(u) for u in urls}
    hosts.discard("")
    n_ip = sum(1 for x in hosts if ref_is_ip(x))
    atts = email.attachments
    spf = h.get("received-spf", "").strip().lower()
    spf_word = spf.split(None, 1)[0] if spf else ""
    ctype = h.get("content-type", "").strip().lower()
    reply_to = _address(h.get("reply-to", ""))
    priority = h.get("x-priority", "").strip()
    importance = h.get("importance", "").strip().lower()
    row = [
        math.log1p(len(subject)),
        ref_upper_ratio(subject),
        float(min(subject.count("!"), 10)),
        float(min(subject.count("$"), 10)),
        float(subj_l.startswith(("re:", "re ", "aw:", "fwd:", "fw:"))),
        float(not subject.strip()),
        math.log1p(len(body)),
        ref_upper_ratio(scan),
        math.log1p(scan.count("!")),
        math.log1p(scan.count("$")),
        math.log1p(len(email.urls)),
        math.log1p(len(hosts)),
        float(min(n_ip, 10)),
        float(min(len(atts), 20)),
        float(any(_executable(a) for a in atts)),
        float(ctype.startswith("text/html")),
        float(spf_word == "pass"),
        float(spf_word in ("fail", "softfail")),
        float(spf_word in ("", "none", "neutral")),
        float("dkim-signature" in h or h.get("dkim", "").strip().lower() == "pass"),
        float(bool(h.get("x-mailer", "").strip())),
        float("in-reply-to" in h or "references" in h),
        float(bool(reply_to) and reply_to != email.sender.strip().lower()),
        float(priority[:1] in ("1", "2") or importance == "high"),
        math.log1p(len(email.recipients)),
    ]
    day = day_of(email.ts_s)
    for w in (sender, domain):
        for k in WINDOWS_DAYS:
            n, _ = w.window(day, k)
            row.append(math.log1p(n))
    for reports in (sender_reports, domain_reports):
        n, sp = reports.window(day - 1, REPORT_WINDOW_DAYS) if reports is not None else (0, 0.0)
        row.append(math.log1p(n))
        row.append(sp / n if n else 0.0)
    return row


def bits(row: list[float]) -> list[str]:
    """Exact comparison, -0.0 and NaN included."""
    return [float(x).hex() for x in row]


# ---------------------------------------------------------------- real corpus


@pytest.fixture(scope="module")
def corpus_emails() -> list[Email]:
    """Every second message of the corpus test split, in time order (as a replay sees them)."""
    corpus = spam_corpus()
    names = [n for n, _ in corpus_files(corpus) if split_of(n) == "test"][::2]
    emails = [decode_email(orjson.dumps(m.event)) for m in load_corpus(corpus, names)]
    return sorted(emails, key=lambda e: (e.ts_s, e.event_id))


def test_corpus_rows_are_identical_in_a_replay(corpus_emails: list[Email]) -> None:
    """Windows built the way training builds them (features first, then count the email in),
    plus random report windows around each message's day."""
    rng = random.Random(5)
    windows: dict[str, DayWindows] = {}
    reports: dict[str, DayWindows] = {}
    for e in corpus_emails:
        s, d = sender_keys(e)
        sw = windows.setdefault("s:" + s, DayWindows())
        dw = windows.setdefault("d:" + d, DayWindows())
        day = day_of(e.ts_s)
        for key in (s, d):
            r = reports.setdefault(key, DayWindows())
            if rng.random() < 0.3:
                r.add(day + rng.randrange(-40, 3), float(rng.random() < 0.5))
        sr, dr = reports[s], reports[d]
        for args in ((sw, dw, sr, dr), (sw, dw), (dw, sw, None, dr)):
            assert bits(spam_dense_features(e, *args)) == bits(ref_dense(e, *args)), e.event_id
        apply_email(e, sw, dw)


def test_corpus_pieces_are_identical(corpus_emails: list[Email]) -> None:
    for e in corpus_emails:
        assert spam._upper_ratio(e.subject) == ref_upper_ratio(e.subject)
        assert spam._upper_ratio(e.body[:BODY_SCAN_CHARS]) == ref_upper_ratio(e.body[:BODY_SCAN_CHARS])
        for u in e.urls:
            host = spam._host(u)
            assert host == ref_host(u), u
            assert spam._is_ip(host) == ref_is_ip(host), host


# ---------------------------------------------------------------- crafted cases

TEXTS = [
    "", " ", "abc", "ABC", "Hello World!!!", "12345 $$$", "ÀÉÎ àéî", "Straße STRASSE", "İstanbul ıi",
    "ǅungla ǈ ǋ", "ΑΣ ας Σ", "日本語 テキスト", "Ⅷ ⅷ ① ²", "\ud800\udfff lone", "MiXeD ÜbEr 🎉 ẞ",
    "x" * 10_000, "É" * 9000, "\x00\x7f\x80\xff", "ꞋꞌAa",
]

URLS = [
    "http://Example.COM/x", "HTTP://EXAMPLE.com:8080/path?q=1#f", "https://a.b.c", "https://a.b.c?x",
    "ftp://1.2.3.4/f", "http://user:pw@host.example/", "http://host.example@evil.example/", "http://[::1]/",
    "http://[fe80::1%25eth0]:80/", "http://[bad/", "http://bad]/", "http://host:abc/", "http://host:80:90/",
    "http://ho\tst/", "http://ho\nst/", " http://lead.example/", "\thttp://tab.example/", "http://例え.jp/",
    "http://xn--r8jz45g.jp/", "http://3221225473/", "http://0x7f000001/", "http://0x7f.0.0.1/", "http://",
    "http:///path", "mailto:a@b.example", "http:host", "//x.example/", "http://a%41.example/", "http://UPPER.EXAMPLE",
    "http://1.2.3.4:8080", "http://cafe.face/", "http://dead:beef::1/", "http://[::ffff:1.2.3.4]/", "http://١٢٣/",
    "http://\u2100.example/", "http://a.example\\b/", "https://x.example/\ttab", "http://host.example#frag",
    "Http://MiXeD.Example/", "http://_under.example/", "http://a.example.", "",
]

HOSTS = ["", "1.2.3.4", "::1", "fe80::1%eth0", "3221225473", "0x7f000001", "0x7f.0.0.1", "cafe", "cafe.face",
         "dead:beef::1", "١٢٣", "256.1.1.1", "1.2.3", "example.com", "ABCD::1", "1.2.3.4%x", "0xgg"]


def test_upper_ratio_crafted() -> None:
    for t in TEXTS:
        assert spam._upper_ratio(t) == ref_upper_ratio(t), repr(t[:30])


def test_host_and_ip_crafted() -> None:
    for u in URLS:
        assert spam._host(u) == ref_host(u), repr(u)
    for h in HOSTS + [ref_host(u) for u in URLS]:
        assert spam._is_ip(h) == ref_is_ip(h), repr(h)


def test_window_counts_at_every_age() -> None:
    day = 12_000
    w = DayWindows()
    for age in (-3, -1, 0, 1, 2, 6, 7, 8, 29, 30, 31, 45):
        for _ in range(abs(age) % 4 + 1):
            w.add(day - age, 1.5)
    got = spam._window_counts(w, day)
    assert bits(got) == bits([math.log1p(w.window(day, k)[0]) for k in WINDOWS_DAYS])
    assert bits(spam._window_counts_generic(w, day)) == bits(got)
    assert bits(spam._window_counts(DayWindows(), day)) == bits([0.0] * len(WINDOWS_DAYS))


def test_crafted_emails_rows_are_identical() -> None:
    rng = random.Random(11)
    for i, t in enumerate(TEXTS):
        e = Email(event_id=f"em-{i}", ts_s=1_030_000_000.0 + i * 86_400, sender="Bob <bob@x.example>",
                  recipients=["a@b.example"], subject=t[:200], body=t * 3, headers={"reply-to": "bob@x.example"},
                  urls=rng.sample(URLS, 8), attachments=[{"filename": "a.EXE.", "content_type": ""}], raw={})
        w = DayWindows()
        for _ in range(20):
            w.add(day_of(e.ts_s) + rng.randrange(-35, 3), rng.random())
        assert bits(spam_dense_features(e, w, w, w, w)) == bits(ref_dense(e, w, w, w, w)), i
