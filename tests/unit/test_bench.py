"""The benchmark's pure parts: percentiles, pacing, throughput, CPU per event, the summary line."""

from __future__ import annotations

import math

import orjson
import pytest

from streams.bench import (
    SUMMARY_KEYS,
    compare,
    cpu_per_event,
    due,
    flat_summary,
    latency_summary,
    markdown,
    percentile,
    targets,
    throughput,
)


def test_percentile_nearest_rank() -> None:
    v = list(range(1, 1001))  # 1..1000
    assert percentile(v, 50) == 500
    assert percentile(v, 99) == 990
    assert percentile(v, 99.9) == 999
    assert percentile(v, 100) == 1000
    assert percentile(v, 0) == 1
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(v, 101)


def test_latency_summary() -> None:
    s = latency_summary([5, 1, 3, 2, 4])
    assert s == {"n": 5, "mean_ms": 3.0, "p50_ms": 3.0, "p99_ms": 5.0, "p999_ms": 5.0, "max_ms": 5.0}
    assert latency_summary([])["n"] == 0 and latency_summary([])["p99_ms"] is None


def test_due_paces_at_the_rate() -> None:
    assert due(0.0, 1000) == 1  # record 0 goes at once
    assert due(0.0009, 1000) == 1
    assert due(0.001, 1000) == 2
    assert due(1.0, 1000) == 1001
    assert due(-1.0, 10) == 0
    # Over 10 s at 2,500/s the schedule releases rate * elapsed (+1) records.
    assert due(10.0, 2500) == 25_001
    with pytest.raises(ValueError):
        due(1.0, 0)


def test_throughput_from_append_times() -> None:
    # A first batch of 100 at t=0, then 1,000 events spread over 2 s: 500/s.
    ts = [0] * 100 + [2 * (i + 1) for i in range(1000)]
    t = throughput(ts)
    assert t["events_per_s"] == 500.0 and t["n"] == 1100 and t["span_s"] == 2.0 and t["reliable"]
    # The window can start later (e.g. once a group is stable).
    assert throughput(ts, start_ms=1000)["events_per_s"] == pytest.approx(500.0, rel=0.01)
    assert throughput([5, 5])["events_per_s"] is None
    assert throughput(list(range(0, 500, 5)))["reliable"] is False  # under a second


def test_cpu_per_event() -> None:
    samples = [(0.0, 0, 1.0), (0.2, 100, 1.5), (0.4, 600, 2.0), (0.6, 1100, 2.5), (0.8, 1100, 2.6)]
    # From the first sample with decisions (100, 1.5 s) to the first with all 1,100 (2.5 s): 1 s / 1,000.
    assert cpu_per_event(samples, 1100) == 1000.0
    assert cpu_per_event(samples[:2], 1100) is None


def test_compare_scores() -> None:
    a = {"e1": (0.5, "allow"), "e2": (0.9, "block")}
    assert compare(a, {"e1": (0.5000005, "allow"), "e2": (0.9, "block")})["equal"]
    bad = compare(a, {"e1": (0.6, "review")})
    assert not bad["equal"] and bad["missing"] == 1 and bad["actions_differ"] == 1
    assert bad["max_score_diff"] == pytest.approx(0.1)


def _result() -> dict:
    lat = {"0.25": latency_summary([1, 2]), "0.5": {**latency_summary([1, 2, 30]), "offered_per_s": 10.0,
                                                      "achieved_per_s": 10.0}}
    return {
        "mode": "quick", "file": "bench/x-quick.json", "started_utc": "2026-11-22T00:00:00Z", "machine": {},
        "fraud": {"saturation": {"events_per_s": 4000.0, "cpu_us_per_event": 250.0, "peak_rss_mb": 500.0},
                  "latency": lat, "two_workers": {"events_per_s": 5000.0},
                  "baseline_per_message": {"events_per_s": 1000.0}, "baseline_faust": {"events_per_s": 2000.0},
                  "equality": {"per_message": {"max_score_diff": 1e-6}, "faust": {"max_score_diff": 0.0}}},
        "spam": {"saturation": {"events_per_s": 1500.0}, "latency": {"0.5": latency_summary([10, 20])},
                 "baseline_per_message": {"events_per_s": 500.0}},
    }


def test_last_line_schema() -> None:
    r = _result()
    r["targets"] = targets(flat_summary(r))
    flat = flat_summary(r)
    line = orjson.loads(orjson.dumps(flat))  # one JSON object, round-trips
    for k in SUMMARY_KEYS:
        assert k in line, k
        assert line[k] is None or isinstance(line[k], (int, float))
    assert line["fraud.events_per_s"] == 4000.0
    assert line["fraud.p99_ms"] == 30.0 and line["fraud.p999_ms"] == 30.0 and line["fraud.p50_ms"] == 2.0
    assert line["spam.p99_ms"] == 20.0
    assert line["targets_met"] == f"{sum(t['met'] for t in r['targets'])}/{len(r['targets'])}"


def test_targets_met_or_not_with_figures() -> None:
    t = {x["target"]: x for x in targets(flat_summary(_result()))}
    assert t["fraud events/s per worker >= 100,000"] == {"target": "fraud events/s per worker >= 100,000",
                                                         "figure": 4000.0, "met": False}
    assert t["fraud >= 3x baseline (b) faust"]["figure"] == 2.0 and not t["fraud >= 3x baseline (b) faust"]["met"]
    assert t["spam >= 5x baseline (a) per-message"]["figure"] == 3.0
    assert t["2 fraud workers >= 1.6x one"]["figure"] == 1.25
    assert t["spam p99 <= 25 ms at 50% of saturation"]["met"]
    assert t["same decisions as faust baseline (max |score diff| <= 1e-5)"]["met"]
    # A missing figure is never "met".
    assert not targets({})[0]["met"]


def test_markdown_renders_missing_parts() -> None:
    r = _result()
    r["targets"] = targets(flat_summary(r))
    md = markdown(r)
    assert "| fraud, streaminfer, 1 worker, saturation | 4,000.0 |" in md
    assert "fraud events/s per worker >= 100,000" in md
    assert "—" in markdown({"mode": "quick", "targets": []})


def test_worker_stages_read_from_the_workers_final_log_line(tmp_path) -> None:
    from streams.bench import worker_stages

    a, b = tmp_path / "w0.log", tmp_path / "w1.log"
    a.write_text("2026 INFO streams.runner: fraud worker: kafka=...\n"
                 "2026 INFO streams.runner: fraud worker stopped: {'events_in': 1000, 'decisions': 1000, "
                 "'stage_s': {'decode': 0.01, 'score': 0.1}}\n")
    b.write_text("2026 INFO streams.runner: fraud worker stopped: {'events_in': 3000, 'stage_s': {'decode': 0.03, "
                 "'score': 0.2, 'produce': 0.04}}\n")
    st = worker_stages([a, b])
    assert st is not None and st["events"] == 4000
    assert st["us_per_event"] == {"decode": 10.0, "score": 75.0, "produce": 10.0}
    assert worker_stages([tmp_path / "missing.log"]) is None
