"""Spam dense features, computed by the same code at training and at serving time.

Two kinds of values, in ``SPAM_DENSE_FEATURES`` order:

- content signals of the email itself (subject shape, shouting, URLs and their
  hosts, attachments, HTML-only, SPF/DKIM, reply markers, body length);
- the sender's and the sender domain's message counts over 1/7/30 days, from
  ``DayWindows`` that hold only messages *before* the scored one: callers
  compute the features first, then ``apply_email``;
- user reports (``spam.feedback``, materialised by the label app) about the sender
  and the sender domain over the 30 days before the message's day: how many, and
  the share that said spam. Reports are bucketed by the day they were made, and a
  message sees only days before its own, so never a report made after it.

Counts and lengths enter as ``log1p`` so that a few huge values do not dominate
the normalisation. Everything is a pure function of the decoded ``Email`` and
the two windows, so a replay with the same windows gives the same row.

The trained models depend on these exact values (``models/train_spam.py`` calls
this same function), so the fast paths here (byte-level letter counts for ASCII
text, a strict pattern for plain ``http(s)://host`` URLs, one pass per window
entity) are written to give bit-identical results to the plain definitions they
replace; ``tests/unit/test_spam_dense_fast.py`` checks that over the corpus.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from urllib.parse import urlsplit

from feature_store.windows import DayWindows, day_of
from streams.events import Email

WINDOWS_DAYS = (1, 7, 30)

#: Bounds on the work per email (the event schema already bounds the sizes).
BODY_SCAN_CHARS = 8192
MAX_URLS_SCANNED = 100

EXECUTABLE_EXTENSIONS = frozenset(
    "exe com scr pif bat cmd vbs vbe js jse wsf wsh hta msi cpl jar lnk reg ps1 dll".split()
)
EXECUTABLE_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-executable",
        "application/x-dosexec",
        "application/hta",
        "application/x-javascript",
        "application/javascript",
        "application/x-sh",
        "application/java-archive",
    }
)

SPAM_DENSE_FEATURES: tuple[str, ...] = (
    "subject_len_log1p",
    "subject_upper_ratio",
    "subject_exclaims",
    "subject_dollars",
    "subject_is_reply",
    "subject_empty",
    "body_len_log1p",
    "body_upper_ratio",
    "body_exclaims_log1p",
    "body_dollars_log1p",
    "urls_log1p",
    "url_hosts_log1p",
    "ip_urls",
    "attachments",
    "executable_attachment",
    "html_only",
    "spf_pass",
    "spf_fail",
    "spf_none",
    "dkim_present",
    "has_x_mailer",
    "has_reply_headers",
    "reply_to_differs",
    "high_priority",
    "recipients_log1p",
    "sender_msgs_1d_log1p",
    "sender_msgs_7d_log1p",
    "sender_msgs_30d_log1p",
    "domain_msgs_1d_log1p",
    "domain_msgs_7d_log1p",
    "domain_msgs_30d_log1p",
    "sender_reports_30d_log1p",
    "sender_spam_share_30d",
    "domain_reports_30d_log1p",
    "domain_spam_share_30d",
)
REPORT_WINDOW_DAYS = 30

NO_DOMAIN = "(none)"


def sender_keys(email: Email) -> tuple[str, str]:
    """(sender address lower-cased, sender domain) -- the two window entities."""
    addr = email.sender.strip().lower()
    domain = addr.rsplit("@", 1)[1] if "@" in addr else ""
    return addr, (domain.strip(". >") or NO_DOMAIN)


_ASCII_LETTERS = string.ascii_letters.encode("ascii")
_ASCII_UPPER = string.ascii_uppercase.encode("ascii")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _upper_ratio(text: str) -> float:
    """Characters with ``str.isupper()`` over characters with ``str.isalpha()`` (0 without letters).

    Counted without a Python step per character: among ASCII characters exactly
    ``A-Za-z`` are alphabetic and ``A-Z`` upper-case, so ``bytes.translate`` counts
    those in C; only the non-ASCII characters (usually few) go through the ``str``
    predicates, in ``map`` rather than a generator.
    """
    if text.isascii():
        b = text.encode("ascii")
        rest = ""
    else:
        b = text.encode("ascii", "ignore")
        rest = "".join(_NON_ASCII.findall(text))
    letters = len(b) - len(b.translate(None, _ASCII_LETTERS))
    if rest:
        letters += sum(map(str.isalpha, rest))
    if not letters:
        return 0.0
    upper = len(b) - len(b.translate(None, _ASCII_UPPER))
    if rest:
        upper += sum(map(str.isupper, rest))
    return upper / letters


#: ``scheme://host[:port]`` followed by ``/``, ``?``, ``#`` or the end, all ASCII, with no
#: character that ``urlsplit`` treats specially in a netloc (``@ [ ] % :`` beyond the
#: port, whitespace and controls, which it strips or rejects): for such URLs the
#: hostname is the lower-cased host, exactly what ``urlsplit(url).hostname`` gives.
_PLAIN_URL = re.compile(
    r"(?:[Hh][Tt][Tt][Pp][Ss]?|[Ff][Tt][Pp])://([A-Za-z0-9._~!$&'()*+,;=-]*)(?::[0-9]*)?(?=[/?#]|\Z)")


def _host(url: str) -> str:
    m = _PLAIN_URL.match(url)
    if m is not None:
        return m.group(1).lower()
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


#: Every string ``ipaddress.ip_address`` accepts is made of these (plus anything after an
#: IPv6 zone's ``%``); a host with any other character is not an address literal.
_IP_CHARS = re.compile(r"[0-9A-Fa-f.:]+")


def _is_ip(host: str) -> bool:
    if not host:
        return False
    if "%" not in host and _IP_CHARS.fullmatch(host) is None:
        # what ip_address's ValueError leads to below, without raising it
        return host.isdigit() or host.startswith("0x")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        # decimal / hex obfuscations such as http://3221225473/ count too
        return host.isdigit() or host.startswith("0x")


def _executable(att: dict) -> bool:
    fn = str(att.get("filename") or "").lower().rstrip(". ")
    ext = fn.rsplit(".", 1)[1] if "." in fn else ""
    ctype = str(att.get("content_type") or "").lower()
    return ext in EXECUTABLE_EXTENSIONS or ctype in EXECUTABLE_TYPES


def _address(value: str) -> str:
    v = value.strip().lower()
    if "<" in v and ">" in v:
        v = v[v.rfind("<") + 1 : v.rfind(">")]
    return v.strip()


def spam_dense_features(email: Email, sender: DayWindows, domain: DayWindows,
                        sender_reports: DayWindows | None = None, domain_reports: DayWindows | None = None
                        ) -> list[float]:
    """Feature row for one email, in ``SPAM_DENSE_FEATURES`` order."""
    subject = email.subject
    body = email.body
    scan = body[:BODY_SCAN_CHARS]
    h = email.headers
    subj_l = subject.lower().lstrip()

    urls = email.urls[:MAX_URLS_SCANNED]
    hosts = {_host(u) for u in urls}
    hosts.discard("")
    n_ip = sum(1 for x in hosts if _is_ip(x))
    atts = email.attachments

    spf = h.get("received-spf", "").strip().lower()
    spf_word = spf.split(None, 1)[0] if spf else ""
    ctype = h.get("content-type", "").strip().lower()
    reply_to = _address(h.get("reply-to", ""))
    priority = h.get("x-priority", "").strip()
    importance = h.get("importance", "").strip().lower()

    row = [
        math.log1p(len(subject)),
        _upper_ratio(subject),
        float(min(subject.count("!"), 10)),
        float(min(subject.count("$"), 10)),
        float(subj_l.startswith(("re:", "re ", "aw:", "fwd:", "fw:"))),
        float(not subject.strip()),
        math.log1p(len(body)),
        _upper_ratio(scan),
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
        row += _window_counts(w, day)
    for reports in (sender_reports, domain_reports):  # None: no reports known, defaults 0
        n, spam = reports.window(day - 1, REPORT_WINDOW_DAYS) if reports is not None else (0, 0.0)
        row.append(math.log1p(n))
        row.append(spam / n if n else 0.0)
    return row


def _window_counts_generic(w: DayWindows, day: int) -> list[float]:
    """``log1p`` of the message count of every ``WINDOWS_DAYS`` window ending at ``day``."""
    return [math.log1p(w.window(day, k)[0]) for k in WINDOWS_DAYS]


def _window_counts_1_7_30(w: DayWindows, day: int) -> list[float]:
    """``_window_counts_generic`` for ``WINDOWS_DAYS == (1, 7, 30)`` in one pass over the
    buckets: a bucket ``age`` days before ``day`` is in every window longer than ``age``.
    Counts are integers, so the order of the additions cannot change a total."""
    n1 = n7 = n30 = 0
    for d, c in w.counts.items():
        age = day - d
        if 0 <= age < 30:
            n30 += c
            if age < 7:
                n7 += c
                if age < 1:
                    n1 += c
    return [math.log1p(n1), math.log1p(n7), math.log1p(n30)]


_window_counts = _window_counts_1_7_30 if WINDOWS_DAYS == (1, 7, 30) else _window_counts_generic


def apply_report(report_ts_s: float, is_spam: bool, reports: DayWindows) -> None:
    """Count one user report into a sender's (or domain's) report buckets, by the day it
    was made; what the label app materialises for ``spam.feedback``."""
    reports.add(day_of(report_ts_s), float(is_spam))


def apply_email(email: Email, sender: DayWindows, domain: DayWindows) -> None:
    """Count the email into its sender's and sender domain's windows."""
    day = day_of(email.ts_s)
    sender.add(day, 0.0)
    domain.add(day, 0.0)
