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
every platform numpy supports. ``hash_email_text`` (one email) is the reference:
a couple of dozen numpy calls per message plus a few nanoseconds per byte, so
its fixed cost dominates at serving rates. ``hash_email_texts`` /
``hash_email_texts_flat`` give the same ids for a whole batch in a few numpy
passes over the batch's concatenated bytes (the polynomial hash is
position-independent, so one prefix sum serves every email); the unit tests
prove them equal to the reference over the real corpus and edge cases.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SCHEME = "poly64-fmix64-v1"

#: Body characters read per allowed body token: bounds the cost of huge bodies.
BODY_CHARS_PER_TOKEN = 16
MAX_SUBJECT_TOKENS = 64
#: Char n-grams are taken from the subject and this many leading body bytes.
CHAR_NGRAM_BYTES = 4096
#: The batched hasher cuts a batch into chunks of about this many encoded bytes,
#: so its uint64 temporaries (8 bytes per text byte) stay cache-sized and a batch
#: of huge bodies cannot allocate without bound.
BATCH_CHUNK_BYTES = 1 << 18

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


def _fmix_inplace(h: np.ndarray) -> np.ndarray:
    """``_fmix`` in place with one scratch array, for arrays the caller owns (same values)."""
    t = np.empty_like(h)
    np.right_shift(h, _S33, out=t)
    h ^= t
    h *= _C1
    np.right_shift(h, _S33, out=t)
    h ^= t
    h *= _C2
    np.right_shift(h, _S33, out=t)
    h ^= t
    return h


def _check_args(n_buckets: int, max_tokens: int, char_ngrams: tuple[int, ...]) -> None:
    if n_buckets <= 0 or max_tokens < 0:
        raise ValueError("n_buckets must be > 0 and max_tokens >= 0")
    if any(int(k) < 1 for k in char_ngrams):
        raise ValueError(f"char n-gram sizes must be >= 1, got {tuple(char_ngrams)}")


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
    _check_args(n_buckets, max_tokens, char_ngrams)
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


# ---------------------------------------------------------------- batched

_FIELD_SALT = np.array([_SALT_SUBJECT, _SALT_BODY], dtype=np.uint64)


def hash_email_texts(
    subjects: Sequence[str],
    bodies: Sequence[str],
    n_buckets: int,
    max_tokens: int,
    *,
    bigrams: bool = True,
    char_ngrams: tuple[int, ...] = (),
) -> list[np.ndarray]:
    """``[hash_email_text(s, b, ...) for s, b in zip(subjects, bodies)]``, computed per batch.

    The arrays are consecutive views of one flat array (read them, do not grow them);
    ``hash_email_texts_flat`` gives that array and the offsets directly.
    """
    ids, offsets = hash_email_texts_flat(subjects, bodies, n_buckets, max_tokens,
                                         bigrams=bigrams, char_ngrams=char_ngrams)
    bounds = offsets.tolist()
    bounds.append(len(ids))
    return [ids[a:b] for a, b in zip(bounds, bounds[1:])]


def hash_email_texts_flat(
    subjects: Sequence[str],
    bodies: Sequence[str],
    n_buckets: int,
    max_tokens: int,
    *,
    bigrams: bool = True,
    char_ngrams: tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(flat int64 ids, int64 start offset of each email): what an EmbeddingBag takes.

    Email ``i``'s ids are ``ids[offsets[i]:offsets[i + 1]]``, exactly
    ``hash_email_text(subjects[i], bodies[i], ...)``: same ids, same order.
    """
    if len(subjects) != len(bodies):
        raise ValueError(f"{len(subjects)} subjects but {len(bodies)} bodies")
    sizes = tuple(int(k) for k in char_ngrams)
    _check_args(n_buckets, max_tokens, sizes)
    body_chars = max_tokens * BODY_CHARS_PER_TOKEN
    pieces: list[np.ndarray] = []
    count_parts: list[np.ndarray] = []
    subj_bs: list[bytes] = []
    body_bs: list[bytes] = []
    nbytes = 0
    for subject, body in zip(subjects, bodies):
        # Exactly the reference's step 1, per email (truncate, then lower, then encode).
        sb = subject.lower().encode("utf-8", "replace") if subject else b""
        body_s = body[:body_chars] if body else ""
        bb = body_s.lower().encode("utf-8", "replace") if body_s else b""
        subj_bs.append(sb)
        body_bs.append(bb)
        nbytes += len(sb) + len(bb) + 2
        if nbytes >= BATCH_CHUNK_BYTES:
            count_parts.append(_hash_chunk(subj_bs, body_bs, n_buckets, max_tokens, bigrams, sizes, pieces))
            subj_bs, body_bs, nbytes = [], [], 0
    if subj_bs:
        count_parts.append(_hash_chunk(subj_bs, body_bs, n_buckets, max_tokens, bigrams, sizes, pieces))
    if not count_parts:
        return _EMPTY.copy(), _EMPTY.copy()
    counts = np.concatenate(count_parts) if len(count_parts) > 1 else count_parts[0]
    offsets = _exclusive_cumsum(counts)
    ids = np.concatenate(pieces).view(np.int64) if pieces else _EMPTY.copy()
    return ids, offsets


def _exclusive_cumsum(a: np.ndarray) -> np.ndarray:
    out = np.zeros(len(a), dtype=np.int64)
    if len(a) > 1:
        np.cumsum(a[:-1], out=out[1:])
    return out


def _hash_chunk(subj_bs: list[bytes], body_bs: list[bytes], n_buckets: int, max_tokens: int, bigrams: bool,
                sizes: tuple[int, ...], pieces: list[np.ndarray]) -> np.ndarray:
    """Append the chunk's ids to ``pieces`` (uint64 slices in output order); return ids per email.

    Layout: ``s0 NL b0 NL s1 NL b1 ...``; every field is its own segment (even
    index: subject, odd: body), and the newline separators (class 0) keep runs from
    crossing fields or emails, as the reference's single newline does. Each kind of
    id (unigram, bigram, char n-gram of one size) is computed for the whole chunk
    sorted by email, mixed and reduced there, then sliced per email.
    """
    m = len(subj_bs)
    segs: list[bytes] = [b""] * (2 * m)
    segs[0::2] = subj_bs
    segs[1::2] = body_bs
    buf = b"\n".join(segs)
    seg_len = np.fromiter(map(len, segs), dtype=np.int64, count=2 * m)
    seg_start = _exclusive_cumsum(seg_len + 1)
    n = len(buf)
    arr = np.frombuffer(buf, dtype=np.uint8)
    padded = np.empty(n + 2, dtype=np.uint8)
    padded[0] = 0
    padded[-1] = 0
    _CLASS.take(arr, out=padded[1:-1])
    cls = padded[1:-1]

    # Tokens: maximal runs of one non-zero class (reference step 2), for the whole chunk:
    # a token starts where the class changes to a non-zero one, ends where it changes from one.
    change = padded[1:] != padded[:-1]
    nonzero = padded != 0
    starts = np.flatnonzero(change & nonzero[1:])
    ends = np.flatnonzero(change & nonzero[:-1])

    # Segment of each token, and the per-field caps (MAX_SUBJECT_TOKENS / max_tokens).
    first = np.searchsorted(starts, seg_start)
    count = np.diff(first, append=len(starts))
    caps = np.empty(2 * m, dtype=np.int64)
    caps[0::2] = MAX_SUBJECT_TOKENS
    caps[1::2] = max_tokens
    kept = np.minimum(count, caps)
    seg = np.repeat(np.arange(2 * m, dtype=np.int64), count)
    if not np.array_equal(kept, count):
        rank = np.arange(len(starts), dtype=np.int64) - first[seg]
        sel = rank < caps[seg]
        starts = starts[sel]
        ends = ends[sel]
        seg = seg[sel]
    n_uni = kept[0::2] + kept[1::2]

    fwd, inv = _powers(n + 1)
    kinds: list[np.ndarray] = []  # per kind: values sorted by email
    kind_counts: list[np.ndarray] = []  # per kind: count per email
    with np.errstate(over="ignore"):
        prefix = np.empty(n + 1, dtype=np.uint64)
        prefix[0] = 0
        np.multiply(arr, fwd[:n], out=prefix[1:])
        np.cumsum(prefix[1:], out=prefix[1:])
        h = prefix[ends]
        h -= prefix[starts]
        h *= inv[starts]
        h ^= _FIELD_SALT[seg & 1]
        uni = _fmix_inplace(h)
        kinds.append(uni)
        kind_counts.append(n_uni)
        if bigrams and len(uni) > 1:
            # Pairs of adjacent kept tokens of one field (never subject/body, never two emails).
            pair = uni[:-1] * _K_BIGRAM
            pair += uni[1:]
            pair += _SALT_BIGRAM
            pair = pair[seg[1:] == seg[:-1]]
            kinds.append(_fmix_inplace(pair))
            per_seg = np.maximum(kept - 1, 0)
            kind_counts.append(per_seg[0::2] + per_seg[1::2])
        if sizes:
            _char_ngrams_chunk(prefix, inv, cls, seg_start, ends, n_uni, sizes, kinds, kind_counts)
    for v in kinds:  # after the bigrams, which read the mixed unigrams
        if n_buckets & (n_buckets - 1) == 0:
            v &= np.uint64(n_buckets - 1)
        else:
            v %= np.uint64(n_buckets)
    if len(kinds) == 1:
        pieces.append(uni)
        return n_uni
    counts = np.stack(kind_counts)  # (kinds, emails)
    src = np.cumsum(counts, axis=1) - counts
    for ce, se in zip(counts.T.tolist(), src.T.tolist()):
        for v, c, s in zip(kinds, ce, se):
            if c:
                pieces.append(v[s:s + c])
    return counts.sum(axis=0)


def _char_ngrams_chunk(prefix: np.ndarray, inv: np.ndarray, cls: np.ndarray, seg_start: np.ndarray,
                       ends: np.ndarray, n_uni: np.ndarray, sizes: tuple[int, ...],
                       kinds: list[np.ndarray], kind_counts: list[np.ndarray]) -> None:
    """Char n-grams of every email of a chunk (reference step 5), one kind per size.

    Email ``e`` reads bytes ``[start, limit)`` with the reference's ``limit``: the
    end of its last kept token, at most ``CHAR_NGRAM_BYTES`` past its body start;
    an email without tokens reads nothing. A window is taken iff all its bytes are
    word bytes inside that range.
    """
    m = len(n_uni)
    email_start = seg_start[0::2]
    with_tokens = np.flatnonzero(n_uni)
    if len(with_tokens) == 0:
        for _ in sizes:
            kinds.append(np.empty(0, dtype=np.uint64))
            kind_counts.append(np.zeros(m, dtype=np.int64))
        return
    last = ends[np.cumsum(n_uni)[with_tokens] - 1]
    region_start = email_start[with_tokens]
    limit = np.minimum(last, seg_start[2 * with_tokens + 1] + CHAR_NGRAM_BYTES)
    lo = int(region_start[0])
    hi = int(limit[-1])
    # In-range mask over [lo, hi): alternating runs in, out, in, ... (limit < the next start).
    run_len = np.empty(2 * len(limit) - 1, dtype=np.int64)
    run_len[0::2] = limit - region_start
    run_len[1::2] = region_start[1:] - limit[:-1]
    in_out = np.zeros(len(run_len), dtype=np.bool_)
    in_out[0::2] = True
    good = np.repeat(in_out, run_len)
    good &= cls[lo:hi] == 1
    runs = {1: good}
    run = good
    for j in range(2, max(sizes) + 1):  # run_j[i]: bytes lo+i .. lo+i+j-1 all good
        run = run[:-1] & good[j - 1:]
        runs[j] = run
    for k in sizes:
        idx = np.flatnonzero(runs[k])
        idx += lo
        h = prefix[idx + k]
        h -= prefix[idx]
        h *= inv[idx]
        h ^= _SALT_CHAR + np.uint64(k)
        kinds.append(_fmix_inplace(h))
        # email e owns the windows starting in [email_start[e], email_start[e + 1])
        kind_counts.append(np.diff(np.searchsorted(idx, email_start), append=len(idx)))
