"""The demo: both pipelines on generated transactions and SpamAssassin emails.

Starts `streaminfer run fraud` and `streaminfer run spam` as real processes,
produces traffic to the input topics (a warm-up flat out, then a paced phase on
which latency is measured), reads the decision and DLQ topics back, stops the
workers with SIGTERM, and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from feature_store.keys import namespace_pattern
from feature_store.store import connect
from models.artifacts import load_artifact
from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from streams.events import format_ts, parse_ts
from streams.settings import Settings

def _producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 5})


def _send(producer: Producer, topic: str, records: Iterator[tuple[bytes | None, bytes | None]],
          rate_per_s: float | None = None) -> int:
    """Produce records flat out, or paced at ``rate_per_s``."""
    n = 0
    t0 = time.perf_counter()
    for key, value in records:
        if rate_per_s:
            delay = t0 + n / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        n += 1
    producer.flush(60)
    return n


def _read_from(settings: Settings, topic: str, start: dict[int, int], want: set[str] | None, timeout_s: float,
               grace_s: float = 1.0) -> list[Any]:
    """Messages from ``start`` offsets on; stops once every id in ``want`` was seen (plus ``grace_s``)."""
    c = Consumer({**settings.kafka_config(), "group.id": f"demo-{uuid.uuid4().hex}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    out: list[Any] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    done_at = None
    try:
        while time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                if m.error() is None:
                    out.append(m)
                    if want is not None:
                        seen.add(orjson.loads(m.value())["event_id"])
            if done_at is None and (want is None or want <= seen):
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= grace_s:
                break
    finally:
        c.close()
    return out


def _poison(pipeline: str, run: str) -> list[tuple[bytes | None, bytes]]:
    if pipeline == "fraud":
        return [(b"c-x", b'{"event_id": "' + run.encode() + b'-bad", "amount": '),
                (b"c-x", orjson.dumps({"event_id": f"{run}-nan", "ts": 1, "card_id": "c", "terminal_id": "t",
                                       "amount": "NaN"})),
                (b"c-x", b'{"event_id":"x","ts":1,"card_id":"c","terminal_id":"t","amount":1e309}')]
    return [(b"x@y.example", orjson.dumps({"event_id": f"{run}-noto", "ts": 1, "from": "a@b", "to": [], "subject": "s"})),
            (b"x@y.example", b"\xff\xfe not utf-8")]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A `streaminfer` process, its output in .stack/logs/demo-<name>.log."""
    logdir = Path(env.get("STREAMINFER_DEMO_LOGDIR", ".stack/logs"))
    logdir.mkdir(parents=True, exist_ok=True)
    log = open(logdir / f"demo-{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", *argv], env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_labels(settings: Settings, last_label_ts: str, app: subprocess.Popen[bytes], timeout_s: float
                 ) -> float | None:
    """Seconds until the label app's fraud watermark in Redis reaches the last label sent
    (None if it does not in time, or the app exited)."""
    from feature_store.keys import watermark_key
    from feature_store.labels import FRAUD_STREAM

    want = parse_ts(last_label_ts)
    r = connect(settings.redis_url.get())
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s and app.poll() is None:
            v = r.get(watermark_key(settings.feature_namespace, FRAUD_STREAM))
            if v is not None and float(v) >= want:
                return time.monotonic() - t0
            time.sleep(0.5)
        return None
    finally:
        r.close()


def _clean_up(settings: Settings) -> None:
    """Delete the run's topics (the label app's changelogs share the prefix) and feature keys."""
    admin = AdminClient(settings.kafka_config())
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            try:
                fut.result()
            except Exception as exc:  # report, never fail the demo on clean-up
                print(f"could not delete a demo topic: {exc}", file=sys.stderr)
    r = connect(settings.redis_url.get())
    for k in r.scan_iter(match=namespace_pattern(settings.feature_namespace), count=1000):
        r.delete(k)
    r.close()


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def _summarise(pipeline: str, decisions: list[Any], dlq: list[Any], paced_ids: set[str], labels: dict[str, int],
               produced: int, model: dict[str, Any]) -> dict[str, Any]:
    decided = [orjson.loads(m.value()) for m in decisions]
    lat = [d["latency_ms"] for d in decided if d["event_id"] in paced_ids and d["latency_ms"] is not None]
    alert = {"fraud": {"review", "block"}, "spam": {"quarantine", "reject"}}[pipeline]
    flagged = {d["event_id"] for d in decided if d["action"] in alert}
    pos = {e for e, y in labels.items() if y}
    tp = len(flagged & pos)
    return {
        "events_in": produced,
        "decisions": len(decided),
        "distinct_events_decided": len({d["event_id"] for d in decided}),
        "actions": dict(Counter(d["action"] for d in decided)),
        "dlq": len(dlq),
        "latency_ms": {"p50": round(_pct(lat, 50), 2), "p99": round(_pct(lat, 99), 2), "n": len(lat)},
        "vs_labels": {"positives": len(pos), "flagged": len(flagged),
                      "precision": round(tp / len(flagged), 4) if flagged else None,
                      "recall": round(tp / len(pos), 4) if pos else None},
        "model": model,
    }


def _model_info(settings: Settings, name: str) -> dict[str, Any]:
    meta = load_artifact(settings.model_dir, name).metadata
    return {"name": name, "version": meta["version"], "test_metrics": meta.get("metrics"),
            "thresholds": meta.get("thresholds")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="streaminfer demo")
    ap.add_argument("--transactions", type=int, default=60_000, help="transactions to send (about)")
    ap.add_argument("--paced-rate", type=float, default=1000.0, help="events/s in the latency phase")
    ap.add_argument("--paced-seconds", type=float, default=10.0)
    ap.add_argument("--emails", type=int, default=1200)
    ap.add_argument("--corpus", default="data/spamassassin")
    args = ap.parse_args(argv)

    base = Settings.from_env()
    run = f"demo-{uuid.uuid4().hex[:6]}"
    # Each run has its own topics (prefix), feature namespace and label-app state, so
    # reruns start alike and nothing of production is touched; all removed at the end.
    settings = dataclasses.replace(base, topic_prefix=f"{base.topic_prefix}{run}.", feature_namespace=run)
    fraud_t, spam_t = topics_for("fraud", settings.topic_prefix), topics_for("spam", settings.topic_prefix)
    label_topics = (settings.topic("fraud.labels"), settings.topic("spam.feedback"))
    ensure_topics(settings.kafka_config(), fraud_t.all() + spam_t.all() + label_topics, settings.partitions,
                  settings.replication_factor)

    from models.corpus import load_corpus, split_of
    from models.fraud_sim import SimConfig, generate
    from models.train_spam import REPORT_DELAY_S

    t_start = time.monotonic()
    sim = generate(SimConfig(n_customers=1000, n_terminals=2000, n_days=35, start_date="2026-10-01", seed=2026))
    events = list(sim.events())[: args.transactions]
    fraud_labels = {e["event_id"]: int(sim.is_fraud[i]) for i, e in enumerate(events)}
    tx_records = [(e["card_id"].encode(), orjson.dumps(e)) for e in events]
    emails = [m for m in load_corpus(args.corpus) if split_of(m.file_name) == "test"]
    # The corpus lists ham folders before spam ones; a seeded shuffle mixes them in time.
    random.Random(2026).shuffle(emails)
    emails = emails[: args.emails]
    spam_labels = {m.event["event_id"]: m.label for m in emails}
    mail_records = [(m.event["to"][0].encode(), orjson.dumps(m.event)) for m in emails]
    n_paced = min(len(tx_records), int(args.paced_rate * args.paced_seconds))
    warm, paced = tx_records[: len(tx_records) - n_paced], tx_records[len(tx_records) - n_paced:]
    mail_warm, mail_paced = mail_records[: len(mail_records) // 2], mail_records[len(mail_records) // 2:]
    # Ground truth that has arrived by the time the traffic is scored: chargebacks (7 days
    # after each transaction) and user reports on the first half of the emails.
    # Only chargebacks that have arrived by the end of the traffic (label_ts <= its last ts).
    last_ts_s = float(sim.ts_s[len(events) - 1])
    labels = [(r["card_id"].encode(), orjson.dumps(r)) for r in sim.labels(stop=len(events))
              if parse_ts(r["label_ts"]) <= last_ts_s]
    # Users report a message a day after it arrived (the delay training assumes).
    feedback = [(m.event["from"].encode(),
                 orjson.dumps({"event_id": m.event["event_id"], "sender": m.event["from"],
                               "label": "spam" if m.label else "ham",
                               "ts": format_ts(parse_ts(m.event["ts"]) + REPORT_DELAY_S)}))
                for m in emails[: len(emails) // 2]]

    env = {**os.environ, "STREAMINFER_TOPIC_PREFIX": settings.topic_prefix,
           "STREAMINFER_FEATURE_NAMESPACE": settings.feature_namespace,
           "STREAMINFER_LABELS_DATA_DIR": str(Path(".stack") / "faust" / run)}
    Path(env["STREAMINFER_LABELS_DATA_DIR"]).parent.mkdir(parents=True, exist_ok=True)
    procs = {"labels": _start("labels", ["features", "run"], env)}
    codes: dict[str, int] = {}
    try:
        prod = _producer(settings)
        print(f"demo {run}: {len(tx_records)} transactions ({len(paced)} paced at {args.paced_rate:.0f}/s), "
              f"{len(mail_records)} emails ({len(mail_paced)} paced), {len(labels)} fraud labels, "
              f"{len(feedback)} spam reports, plus a few bad records", flush=True)
        _send(prod, label_topics[0], iter(labels))
        _send(prod, label_topics[1], iter(feedback))
        labels_s = _wait_labels(settings, max(orjson.loads(v)["label_ts"] for _, v in labels), procs["labels"],
                                timeout_s=180)
        print(f"labels materialised in Redis after {labels_s:.1f} s" if labels_s is not None
              else "labels NOT fully materialised (see .stack/logs/demo-labels.log); scoring goes on", flush=True)
        procs.update({p: _start(p, ["run", p], env) for p in ("fraud", "spam")})
        _send(prod, fraud_t.input, iter(warm + _poison("fraud", run)))
        _send(prod, spam_t.input, iter(mail_warm + _poison("spam", run)))
        start0 = {t: {p: 0 for p in range(settings.partitions)} for t in (fraud_t.decisions, spam_t.decisions)}
        # Let the warm-up drain, so the paced phase measures latency, not backlog.
        warm_ids = {orjson.loads(v)["event_id"] for _, v in warm + mail_warm}
        _read_from(settings, fraud_t.decisions, start0[fraud_t.decisions], warm_ids & set(fraud_labels), 300, 0)
        _read_from(settings, spam_t.decisions, start0[spam_t.decisions], warm_ids & set(spam_labels), 300, 0)
        _send(prod, fraud_t.input, iter(paced), rate_per_s=args.paced_rate)
        _send(prod, spam_t.input, iter(mail_paced), rate_per_s=min(args.paced_rate, 200.0))
        paced_ids = {orjson.loads(v)["event_id"] for _, v in paced + mail_paced}
        fd = _read_from(settings, fraud_t.decisions, start0[fraud_t.decisions], set(fraud_labels), 300)
        sd = _read_from(settings, spam_t.decisions, start0[spam_t.decisions], set(spam_labels), 300)
        fq = _read_from(settings, fraud_t.dlq, {p: 0 for p in range(settings.partitions)}, None, 5)
        sq = _read_from(settings, spam_t.dlq, {p: 0 for p in range(settings.partitions)}, None, 5)
    finally:
        codes = {p: _stop(w) for p, w in procs.items()}
        _clean_up(settings)
    summary = {
        "run": run,
        "seconds": round(time.monotonic() - t_start, 1),
        "fraud": _summarise("fraud", fd, fq, paced_ids, fraud_labels, len(tx_records) + 3, _model_info(settings, "fraud-mlp")),
        "spam": _summarise("spam", sd, sq, paced_ids, spam_labels, len(mail_records) + 2, _model_info(settings, "spam-ngram")),
        "labels_materialised_s": labels_s,
        "exit_codes": codes,
    }
    _print(summary)
    print(orjson.dumps(summary).decode())
    ok = all(c == 0 for c in codes.values()) and all(
        summary[p]["distinct_events_decided"] == len(lbl) for p, lbl in (("fraud", fraud_labels), ("spam", spam_labels)))
    return 0 if ok else 1


def _headline(metrics: dict[str, Any] | None) -> str:
    """The scalar test metrics, and recall / FPR or precision at each threshold."""
    if not metrics:
        return "none recorded"
    parts = [f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)]
    for k, v in metrics.items():
        if isinstance(v, dict) and "threshold" in v:
            shown = {n: round(x, 4) for n, x in v.items() if n in ("precision", "recall", "spam_recall", "ham_fpr")}
            parts.append(f"{k}@{v['threshold']:.3f} {shown}")
    return ", ".join(parts)


def _print(s: dict[str, Any]) -> None:
    print(f"\n=== streaminfer demo {s['run']} ({s['seconds']} s) ===")
    for p in ("fraud", "spam"):
        x = s[p]
        m = x["model"]
        print(f"\n[{p}] model {m['name']} v{m['version']}  thresholds {m['thresholds']}")
        print(f"  test metrics: {_headline(m['test_metrics'])}")
        print(f"  events in {x['events_in']}  decided {x['distinct_events_decided']}  decisions {x['decisions']}  DLQ {x['dlq']}")
        print(f"  actions {x['actions']}")
        print(f"  end-to-end latency (paced phase, n={x['latency_ms']['n']}): p50 {x['latency_ms']['p50']} ms, "
              f"p99 {x['latency_ms']['p99']} ms")
        v = x["vs_labels"]
        print(f"  against labels: {v['positives']} positives, {v['flagged']} flagged, precision {v['precision']}, "
              f"recall {v['recall']}")
    print(f"\nprocesses exited with {s['exit_codes']}; the run's topics and feature keys were removed\n")


if __name__ == "__main__":
    sys.exit(main())
