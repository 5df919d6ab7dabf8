"""Benchmark (not a test): feature read + update per batch against the local Redis.

For batches of 1, 100, 1,000 and 10,000 transactions, runs the live path
(``feature_store.batch.fraud_batch`` -- one pipelined read of card, terminal and
terminal-risk windows plus the batch's applied-event markers -- then
``FeatureStore.write`` -- one pipelined Lua call per changed entity) in a scratch
namespace, and reports microseconds per event and Redis round trips per batch.
Writes bench/features/results.{json,md}.

    .venv/bin/python ops/bench_features.py [--redis URL] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_store.batch import fraud_batch  # noqa: E402
from feature_store.keys import namespace_pattern  # noqa: E402
from feature_store.store import FeatureStore, connect  # noqa: E402
from streams.events import Transaction  # noqa: E402

DAY = 86_400
T0 = 20_500 * DAY


def make_batch(n: int, rng: random.Random, t: float, cards: int = 50_000, terminals: int = 10_000) -> list[Transaction]:
    return [Transaction(f"tx-{uuid.uuid4().hex}", t + i * 0.01, f"c-{rng.randrange(cards)}",
                        f"t-{rng.randrange(terminals)}", round(rng.uniform(1, 300), 2), {}) for i in range(n)]


def run(url: str, repeats: int) -> dict:
    client = connect(url, timeout_s=10.0)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    store = FeatureStore(client, ns)
    rng = random.Random(0)
    # Warm state: every card and terminal has a few days of history, so reads return real hashes.
    for day in range(3):
        for _ in range(5):
            rows, _, snap = fraud_batch(store, make_batch(10_000, rng, T0 + day * DAY))
            store.write(snap)
    results = []
    try:
        for size in (1, 100, 1000, 10_000):
            reps = max(3, min(repeats, 200_000 // size))
            times, rts, replay_times = [], [], []
            for r in range(reps):
                batch = make_batch(size, rng, T0 + 3 * DAY + r)
                rt0 = store.round_trips
                t = time.perf_counter()
                rows, _, snap = fraud_batch(store, batch)
                store.write(snap)
                times.append(time.perf_counter() - t)
                rts.append(store.round_trips - rt0)
                if r < 3:  # the same batch redelivered (idempotent path)
                    t = time.perf_counter()
                    rows, _, snap = fraud_batch(store, batch)
                    store.write(snap)
                    replay_times.append(time.perf_counter() - t)
            med = statistics.median(times)
            results.append({
                "batch": size, "repeats": reps,
                "median_batch_ms": round(med * 1e3, 3),
                "p90_batch_ms": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, 3),
                "us_per_event": round(med / size * 1e6, 2),
                "events_per_s": round(size / med),
                "redis_round_trips_per_batch": statistics.mode(rts),
                "redelivered_batch_ms": round(statistics.median(replay_times) * 1e3, 3),
            })
            print(json.dumps(results[-1]), flush=True)
    finally:
        keys = list(client.scan_iter(match=namespace_pattern(ns), count=10_000))
        for lo in range(0, len(keys), 10_000):
            client.delete(*keys[lo:lo + 10_000])
        info = client.info("server")
        client.close()
    return {"what": "fraud feature read+update per batch (fraud_batch + write), local Redis",
            "redis_version": info.get("redis_version"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "entities": {"cards": 50_000, "terminals": 10_000}, "results": results}


def to_md(out: dict) -> str:
    lines = ["# Feature read+update per batch", "", out["what"] + ".", "",
             f"Redis {out['redis_version']}, Python {out['python']}, {out['cpus']} CPUs, "
             f"{out['entities']['cards']:,} cards / {out['entities']['terminals']:,} terminals, warm state.", "",
             "| batch | µs/event | events/s | median batch ms | p90 batch ms | Redis round trips/batch | redelivered batch ms |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in out["results"]:
        lines.append(f"| {r['batch']:,} | {r['us_per_event']} | {r['events_per_s']:,} | {r['median_batch_ms']} | "
                     f"{r['p90_batch_ms']} | {r['redis_round_trips_per_batch']} | {r['redelivered_batch_ms']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="redis://localhost:6379/0")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "features"))
    a = ap.parse_args()
    out = run(a.redis, a.repeats)
    d = Path(a.out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    (d / "results.md").write_text(to_md(out))
    print(json.dumps(out))
