"""The batched text hasher gives exactly the reference's ids, email by email.

``hash_email_texts`` / ``SpamModel.tokens_batch`` replace a per-email loop over
``hash_email_text`` on the serving path; the trained embedding table depends on
every id and its order, so equality is checked over real SpamAssassin messages
with the deployed artifact's parameters and other configurations, and over
crafted edge cases mixed into one batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

import models.text as text
from models.artifacts import latest_version
from models.corpus import corpus_files, load_corpus, split_of
from models.spam_model import SpamModel, TokenBatch
from models.text import MAX_SUBJECT_TOKENS, hash_email_text, hash_email_texts, hash_email_texts_flat
from models.train_spam import FULL_CONFIG
from streams.events import Email, decode_email

from tests.models_util import tiny_spam_net
from tests.stack import ROOT, spam_corpus

def _params(t: dict) -> dict:
    return {"n_buckets": int(t["n_buckets"]), "max_tokens": int(t["max_tokens"]),
            "bigrams": bool(t["bigrams"]), "char_ngrams": tuple(int(k) for k in t["char_ngrams"])}


def latest_artifact_meta() -> Path | None:
    """The latest spam model's metadata (``ops/test.sh`` trains one before the tests)."""
    v = latest_version(ROOT / "artifacts", "spam-ngram")
    return None if v is None else ROOT / "artifacts" / "spam-ngram" / v / "metadata.json"


def deployed_text_params() -> dict:
    """The text parameters serving runs: the latest artifact's, else what training writes."""
    meta = latest_artifact_meta()
    return _params(json.loads(meta.read_text())["text"] if meta is not None else FULL_CONFIG)


CONFIGS = [
    deployed_text_params(),
    {"n_buckets": 1 << 18, "max_tokens": 2000, "bigrams": True, "char_ngrams": ()},
    {"n_buckets": 1000, "max_tokens": 50, "bigrams": False, "char_ngrams": ()},  # not a power of two
    {"n_buckets": 4096, "max_tokens": 200, "bigrams": True, "char_ngrams": (3,)},
    {"n_buckets": 12_345, "max_tokens": 7, "bigrams": True, "char_ngrams": (5, 2, 2)},  # truncation, odd sizes
    {"n_buckets": 1 << 62, "max_tokens": 300, "bigrams": True, "char_ngrams": (1, 4)},  # raw hashes show
    {"n_buckets": 50, "max_tokens": 0, "bigrams": True, "char_ngrams": (3,)},  # subject only
]


def config_id(c: dict) -> str:
    return f"b{c['n_buckets']}-t{c['max_tokens']}-bi{int(c['bigrams'])}-c{''.join(map(str, c['char_ngrams']))}"


def reference(pairs: list[tuple[str, str]], cfg: dict) -> list[np.ndarray]:
    return [hash_email_text(s, b, cfg["n_buckets"], cfg["max_tokens"], bigrams=cfg["bigrams"],
                            char_ngrams=cfg["char_ngrams"]) for s, b in pairs]


def batched(pairs: list[tuple[str, str]], cfg: dict) -> list[np.ndarray]:
    return hash_email_texts([s for s, _ in pairs], [b for _, b in pairs], cfg["n_buckets"], cfg["max_tokens"],
                            bigrams=cfg["bigrams"], char_ngrams=cfg["char_ngrams"])


def assert_same(pairs: list[tuple[str, str]], cfg: dict) -> None:
    want = reference(pairs, cfg)
    got = batched(pairs, cfg)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.int64, i
        assert np.array_equal(g, w), f"email {i} ({pairs[i][0][:40]!r}): {len(g)} ids vs {len(w)}"


@pytest.fixture(scope="module")
def corpus_pairs() -> list[tuple[str, str]]:
    """Every third message of the corpus test split (about 400), in file order."""
    corpus = spam_corpus()
    names = [n for n, _ in corpus_files(corpus) if split_of(n) == "test"][::3]
    emails = [decode_email(orjson.dumps(m.event)) for m in load_corpus(corpus, names)]
    assert len(emails) > 300
    return [(e.subject, e.body) for e in emails]


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_batched_equals_reference_on_real_corpus(corpus_pairs: list[tuple[str, str]], cfg: dict) -> None:
    assert_same(corpus_pairs, cfg)


def test_the_deployed_and_the_training_configs_are_the_ones_checked() -> None:
    """CONFIGS[0] must be what serving runs (the latest artifact) and what training writes,
    char n-grams included, so the equality tests cover the real path."""
    meta = latest_artifact_meta()
    assert meta is not None, "no spam-ngram artifact: ./ops/test.sh trains one before the tests"
    assert CONFIGS[0] == _params(json.loads(meta.read_text())["text"]) == _params(FULL_CONFIG)
    assert CONFIGS[0]["char_ngrams"]


def test_chunk_boundaries_do_not_matter(corpus_pairs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is cut into chunks by byte size; any cut gives the same ids."""
    cfg = CONFIGS[0]
    want = reference(corpus_pairs[:60], cfg)
    for chunk in (1, 100, 5000, 1 << 16):
        monkeypatch.setattr(text, "BATCH_CHUNK_BYTES", chunk)
        got = batched(corpus_pairs[:60], cfg)
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), chunk


EDGE: list[tuple[str, str]] = [
    ("", ""),
    ("", "hello world"),
    ("only a subject", ""),
    ("...", "--- ,,, ;;; \n\t\r  " * 300),  # separators only
    ("", " \n \n "),
    ("Ünïcödé ΑΣ Σ ß İstanbul ǅ", "日本語のテキスト ÀÉÎ ΟΔΥΣΣΕΥΣ naïve café"),
    ("\ud800lone", "a\udfffb \ud83d c \udc00"),  # lone surrogates become '?' (a separator)
    ("emoji 🎉🎉", "💰💰💰 $$$ !!! win!!!$$$ don't can't _x_"),
    ("s " * 500, ""),  # more than MAX_SUBJECT_TOKENS subject tokens, no body
    ("t " * 100, "body words " * 50),
    ("huge", "word " * 100_000),  # body cut at max_tokens * BODY_CHARS_PER_TOKEN chars
    ("huge2", "y" * 100_000),
    ("a" * 5000, "b" * 5000),  # one very long token each
    ("x", "é" * 40_000),  # multi-byte chars across every cut
    ("İİİ", "İ" * 33_000),  # lower() lengthens the text
    ("$!", "!$!$!$ $ ! a$b!c"),
    ("tab\tsep", "line\nbreak\r\nand\x00nul\x7fdel"),
    ("re: hi", "short"),
    ("z", "a " * 3000),  # body tokens truncated before CHAR_NGRAM_BYTES at small max_tokens
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_edge_cases_alone_and_mixed(cfg: dict) -> None:
    for pair in EDGE:
        assert_same([pair], cfg)  # a batch of one
    assert_same(EDGE, cfg)  # all of them in one batch
    assert_same(EDGE[::-1] + EDGE, cfg)  # other neighbours
    interleaved = [p for pair in zip(EDGE, [("", "")] * len(EDGE)) for p in pair]
    assert_same(interleaved, cfg)  # empty emails between every two


def test_flat_form_and_empty_batch() -> None:
    cfg = CONFIGS[0]
    subjects, bodies = [s for s, _ in EDGE], [b for _, b in EDGE]
    ids, offsets = hash_email_texts_flat(subjects, bodies, cfg["n_buckets"], cfg["max_tokens"],
                                         bigrams=cfg["bigrams"], char_ngrams=cfg["char_ngrams"])
    want = reference(EDGE, cfg)
    assert ids.dtype == np.int64 and offsets.dtype == np.int64 and len(offsets) == len(EDGE)
    assert np.array_equal(ids, np.concatenate(want))
    assert offsets.tolist() == np.concatenate(([0], np.cumsum([len(w) for w in want])[:-1])).tolist()
    e_ids, e_off = hash_email_texts_flat([], [], 100, 10)
    assert len(e_ids) == 0 and len(e_off) == 0
    assert hash_email_texts([], [], 100, 10) == []


def test_bad_arguments_are_refused_like_the_reference() -> None:
    with pytest.raises(ValueError):
        hash_email_texts(["a"], ["b", "c"], 100, 10)
    for args, kw in (((0, 10), {}), ((100, -1), {}), ((100, 10), {"char_ngrams": (0,)})):
        with pytest.raises(ValueError):
            hash_email_texts(["a"], ["b"], *args, **kw)
        with pytest.raises(ValueError):
            hash_email_text("a", "b", *args, **kw)
    assert len(hash_email_text("s " * 500, "", 1 << 20, 10, bigrams=False)) == MAX_SUBJECT_TOKENS


def email(i: int, subject: str, body: str) -> Email:
    """Built directly: JSON cannot carry the lone surrogates some edge cases hold."""
    return Email(event_id=f"em-{i}", ts_s=1_030_000_000.0, sender="a@b.example", recipients=["c@d.example"],
                 subject=subject, body=body, headers={}, urls=[], attachments=[], raw={})


def test_model_tokens_batch_equals_tokens_and_scores_the_same(tmp_path: Path) -> None:
    net, meta = tiny_spam_net()
    model = SpamModel(net, meta, "mem", torch.device("cpu"))
    emails = [email(i, s, b) for i, (s, b) in enumerate(EDGE)]
    batch = model.tokens_batch(emails)
    singles = [model.tokens(e) for e in emails]
    assert isinstance(batch, TokenBatch) and len(batch) == len(emails)
    for i, t in enumerate(singles):
        assert np.array_equal(batch[i], t)
        assert np.array_equal(batch[i - len(emails)], t)
    assert all(np.array_equal(a, b) for a, b in zip(batch.as_list(), singles))
    with pytest.raises(IndexError):
        batch[len(emails)]
    dense = np.random.default_rng(0).normal(size=(len(emails), len(model.dense_features))).astype(np.float32)
    assert np.array_equal(model.predict(batch, dense), model.predict(singles, dense))
    empty = model.tokens_batch([])
    assert len(empty) == 0 and model.predict(empty, np.empty((0, len(model.dense_features)))).shape == (0,)
