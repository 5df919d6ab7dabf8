"""The faust label app end to end on the real broker and Redis: labels in, Redis
values out; the app is stopped (SIGTERM) mid-stream and restarted, recovers its
tables from the changelog, and the values are still right (repeats counted once)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from feature_store.keys import namespace_pattern
from feature_store.labels import materialise
from feature_store.store import connect
from models.fraud_sim import SimConfig, generate
from streams.events import parse_ts
from streams.kafka_admin import ensure_topics
from tests.kafka_util import delete_topics, produce_all
from tests.stack import ROOT, Stack, wait_for

pytestmark = pytest.mark.integration


def start_app(stack: Stack, prefix: str, data_dir: Path) -> subprocess.Popen[bytes]:
    env = stack.env(prefix, 3, STREAMINFER_LABELS_DATA_DIR=str(data_dir))
    return subprocess.Popen([sys.executable, "-m", "feature_store.labels_app", "-l", "info"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop_app(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail("label app did not stop on SIGTERM:\n" + out.decode()[-3000:])
    return out.decode()


def dump(client, ns: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every label-view hash of a namespace (the watermark aside), keyed without the namespace."""
    out = {}
    for key in client.scan_iter(match=namespace_pattern(ns), count=1000):
        if b":watermark:" in key:
            continue
        out[key.split(b":", 2)[2]] = client.hgetall(key)
    return out


def test_labels_in_redis_out_and_restart_recovers(stack: Stack, prefix: str, tmp_path: Path) -> None:
    sim = generate(SimConfig(n_customers=60, n_terminals=40, n_days=20, seed=11))
    labels = list(sim.labels())
    assert len(labels) > 500
    reports = [{"event_id": f"em-{i}", "sender": f"u{i % 7}@d{i % 3}.example", "label": "spam" if i % 4 else "ham",
                "ts": 1_790_000_000_000 + (i % 5) * 86_400_000} for i in range(300)]
    # Two interleaved halves, so the second half lands in the same buckets as the first.
    first, second = labels[0::2], labels[1::2]
    rep1, rep2 = reports[0::2], reports[1::2]
    client = connect(stack.redis_url)
    ns, ref1, ref2 = prefix + "ns", prefix + "ref1", prefix + "ref2"
    materialise(client, ref1, first, rep1)
    materialise(client, ref2, labels, reports)
    topics = [prefix + "fraud.labels", prefix + "spam.feedback"]
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics, 3, 1)

    def send(labs, reps) -> None:
        produce_all(stack.bootstrap, topics[0], [(r["card_id"].encode(), orjson.dumps(r)) for r in labs])
        produce_all(stack.bootstrap, topics[1], [(r["sender"].encode(), orjson.dumps(r)) for r in reps])

    data_dir = tmp_path / "faust"
    send(first, rep1)
    proc = start_app(stack, prefix, data_dir)
    try:
        ok = wait_for(lambda: dump(client, ns) == dump(client, ref1), 60, 0.5)
    finally:
        log1 = stop_app(proc)
    assert ok, "first half not materialised:\n" + log1[-3000:]
    assert "Traceback" not in log1, log1[-3000:]

    # Stopped mid-stream: the rest arrives, with a few repeats of labels already counted.
    send(second + first[:25], rep2 + rep1[:10])
    proc = start_app(stack, prefix, data_dir)
    try:
        ok = wait_for(lambda: dump(client, ns) == dump(client, ref2), 60, 0.5)
    finally:
        log2 = stop_app(proc)
    assert ok, "after the restart the values are wrong:\n" + log2[-3000:]
    # The watermark is the newest label time seen.
    wm = float(client.get(f"si:{ns}:watermark:{{fraud_labels}}".encode()))
    assert wm == max(parse_ts(x["label_ts"]) for x in labels)
    for n in (ns, ref1, ref2):
        keys = list(client.scan_iter(match=namespace_pattern(n)))
        if keys:
            client.delete(*keys)
    client.close()
    delete_topics(stack.bootstrap, prefix)
