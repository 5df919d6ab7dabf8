"""Deterministic, vectorised hashing of email text into EmbeddingBag token ids.

The same function runs at training and at serving time, in any process, on any
machine: it must not depend on Python's ``hash()`` (salted per process) or on
anything but its inputs. Scheme ``poly64-fmix64-v1``:

1. ``subject.lower()`` and the first ``max_tokens * BODY_CHARS_PER_TOKEN``
   characters of ``body.lower()`` are joined with a newline and encoded as UTF-8
   (``errors="replace"``, so a stray surrogate cannot raise).
2. Bytes are classed: ``[a-z0-9_']`` and every non-ASCII byte are word bytes,
   ``$`` and ``!`` form their own runs (``"!!!"`` is one token, ``"$$$"`` another),
   anything else separates. A token is a maximal run of one class.
3. Subject tokens (at most ``MAX_SUBJECT_TOKENS``) and body tokens (at most
   ``max_tokens``) are hashed with a 64-bit polynomial hash computed for all
   tokens at once from prefix sums (``sum b_j * Q**j``, wrapped mod 2**64, then
   multiplied by ``Q**-start`` so a token hashes the same wherever it occurs),
   salted by field (subject tokens never share ids with body tokens) and mixed
   with MurmurHash3's 64-bit finaliser.
4. Bigrams of adjacent tokens of the same field get their own salted mix of
   both unigram hashes.
5. Optionally (``char_ngrams=(3, 4, ...)``), character n-grams inside word
   tokens of the subject and of the first ``CHAR_NGRAM_BYTES`` bytes of body,
   hashed the same way with their own salt.
6. ids = mixed hash mod ``n_buckets``, as int64: unigrams, then bigrams, then
   char n-grams.

All arithmetic is numpy uint64 with wrap-around, so results are identical on
every platform numpy supports. The cost is a couple of dozen numpy calls per
message plus a few nanoseconds per byte.
"""

from __future__ import annotations

import numpy as np

SCHEME = "poly64-fmix64-v1"

#: Body characters read per allowed body token: bounds the cost of huge bodies.
BODY_CHARS_PER_TOKEN = 16
MAX_SUBJECT_TOKENS = 64
#: Char n-grams are taken from the subject and this many leading body bytes.
CHAR_NGRAM_BYTES = 4096

_Q = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2**64
_Q_INV = np.uint64(pow(0x9E3779B97F4A7C15, -1, 1 << 64))
_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_K_BIGRAM = np.uint64(0xD6E8FEB86659FD93)
_SALT_SUBJECT = np.uint64(0x5B4C3D2E1F102132)
_SALT_BODY = np.uint64(0x1A2B3C4D5E6F7081)
_SALT_BIGRAM = np.uint64(0x0F1E2D3C4B5A6978)
_SALT_CHAR = np.uint64(0x7766554433221100)

# Byte classes: 0 separator, 1 word, 2 dollar, 3 exclamation.
_CLASS = np.zeros(256, dtype=np.uint8)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789_'":
    _CLASS[_c] = 1
_CLASS[128:] = 1
_CLASS[ord("$")] = 2
_CLASS[ord("!")] = 3

_pow_cache: dict[str, np.ndarray] = {}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Q**j and Q**-j for j < n (cached, grown by doubling)."""
    fwd = _pow_cache.get("fwd")
    if fwd is None or len(fwd) < n:
        size = max(4096, 1 << (max(n, 1) - 1).bit_length())
        with np.errstate(over="ignore"):
            fwd = np.empty(size, dtype=np.uint64)
            fwd[0] = 1
            fwd[1:] = _Q
            np.cumprod(fwd, out=fwd)
            inv = np.empty(size, dtype=np.uint64)
            inv[0] = 1
            inv[1:] = _Q_INV
            np.cumprod(inv, out=inv)
        _pow_cache["fwd"] = fwd
        _pow_cache["inv"] = inv
    return _pow_cache["fwd"], _pow_cache["inv"]


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _S33)
    h = h * _C1
    h = h ^ (h >> _S33)
    h = h * _C2
    return h ^ (h >> _S33)


_EMPTY = np.empty(0, dtype=np.int64)


def hash_email_text(
    subject: str,
    body: str,
    n_buckets: int,
    max_tokens: int,
    *,
    bigrams: bool = True,
    char_ngrams: tuple[int, ...] = (),
) -> np.ndarray:
    """Token ids in ``[0, n_buckets)`` for one email (scheme in the module doc).

    At most ``MAX_SUBJECT_TOKENS + max_tokens`` unigrams and one bigram fewer per
    field; char n-grams add a bounded number more (``CHAR_NGRAM_BYTES`` per size).
    """
    if n_buckets <= 0 or max_tokens < 0:
        raise ValueError("n_buckets must be > 0 and max_tokens >= 0")
    subj_b = subject.lower().encode("utf-8", "replace") if subject else b""
    body_s = body[: max_tokens * BODY_CHARS_PER_TOKEN] if body else ""
    body_b = body_s.lower().encode("utf-8", "replace") if body_s else b""
    buf = subj_b + b"\n" + body_b
    n = len(buf)
    arr = np.frombuffer(buf, dtype=np.uint8)
    cls = _CLASS[arr]
    # Run boundaries: index i where the class changes between byte i-1 and i.
    padded = np.empty(n + 2, dtype=np.uint8)
    padded[0] = 0
    padded[-1] = 0
    padded[1:-1] = cls
    bounds = np.flatnonzero(padded[1:] != padded[:-1])
    starts = bounds[:-1]
    ends = bounds[1:]
    keep = cls[starts] != 0
    starts = starts[keep]
    ends = ends[keep]
    n_subj_bytes = len(subj_b)
    n_subj = int(np.searchsorted(starts, n_subj_bytes))
    s_starts, s_ends = starts[:n_subj][:MAX_SUBJECT_TOKENS], ends[:n_subj][:MAX_SUBJECT_TOKENS]
    b_starts, b_ends = starts[n_subj:][:max_tokens], ends[n_subj:][:max_tokens]
    ns, nb = len(s_starts), len(b_starts)
    if ns + nb == 0:
        return _EMPTY.copy()
    starts = np.concatenate((s_starts, b_starts))
    ends = np.concatenate((s_ends, b_ends))
    last = int(ends[-1])
    fwd, inv = _powers(last + 1)
    with np.errstate(over="ignore"):
        prefix = np.empty(last + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(arr[:last].astype(np.uint64) * fwd[:last], out=prefix[1:])
        h = (prefix[ends] - prefix[starts]) * inv[starts]
        salt = np.empty(ns + nb, dtype=np.uint64)
        salt[:ns] = _SALT_SUBJECT
        salt[ns:] = _SALT_BODY
        uni = _fmix(h ^ salt)
        parts = [uni]
        if bigrams:
            pair = _fmix(uni[:-1] * _K_BIGRAM + uni[1:] + _SALT_BIGRAM)
            if ns and nb:  # no bigram across the subject/body boundary
                pair = np.delete(pair, ns - 1)
            parts.append(pair)
        if char_ngrams:
            parts.append(_char_ngrams(prefix, inv, cls, n_subj_bytes, last, char_ngrams))
        ids = np.concatenate(parts) if len(parts) > 1 else uni
        return (ids % np.uint64(n_buckets)).astype(np.int64)


def _char_ngrams(prefix: np.ndarray, inv: np.ndarray, cls: np.ndarray, n_subj_bytes: int, last: int,
                 sizes: tuple[int, ...]) -> np.ndarray:
    limit = min(last, n_subj_bytes + 1 + CHAR_NGRAM_BYTES)
    word = cls[:limit] == 1
    # run id per byte: positions i..i+k-1 lie in one word iff the count of
    # non-word bytes in that span is zero.
    nonword = np.empty(limit + 1, dtype=np.int64)
    nonword[0] = 0
    np.cumsum(~word, out=nonword[1:])
    out = []
    for k in sizes:
        if limit < k:
            continue
        i = np.arange(limit - k + 1)
        ok = nonword[i + k] == nonword[i]
        i = i[ok]
        if len(i) == 0:
            continue
        h = (prefix[i + k] - prefix[i]) * inv[i]
        out.append(_fmix(h ^ (_SALT_CHAR + np.uint64(k))))
    return np.concatenate(out) if out else np.empty(0, dtype=np.uint64)
