"""The benchmark: ``./ops/bench.sh [--quick]`` / ``streaminfer bench [--quick]``.

Drives the real stack (the local Kafka and Redis) with real worker processes
(``python -m streams.cli run PIPELINE``, as an operator starts them) and the
baselines of ``streams.baselines``. Every measurement gets its own topic prefix,
consumer group and feature namespace; all of them are removed at the end.

The run's topics are created with ``message.timestamp.type=LogAppendTime``, so every
input and decision record carries the time the broker appended it. All figures come
from those broker timestamps:

- **Saturation** (events/s): N events are pre-loaded into the input topic, then the
  workers start; throughput = decisions / (last decision's append time - first's).
  With 2 workers the window starts once the group is stable with both members
  assigned (so the join and its rebalance are not counted).
- **Latency** (ms): with the same worker still running, paced phases at 25%, 50% and
  80% of the measured saturation rate; per event, decision append time - input
  append time (joined on the decision's ``source`` partition/offset), p50/p99/p99.9.
- **CPU per event**: utime+stime of the measured processes (``/proc/<pid>/stat``)
  between the first sample with decisions and the sample where all N are decided,
  divided by the decisions in between; also the broker's and Redis' CPU over the same
  interval (their pid files in ``.stack/run``). **Peak RSS**: ``VmHWM``.
- **Baselines** (``streams.baselines``): the per-message confluent-kafka loop (fraud
  and spam) and the faust-streaming agent (fraud), saturated the same way.
- **Same decisions**: a fixed set of events on a one-partition topic (so every
  pipeline sees the same total order, and terminals shared between cards count alike)
  through streaminfer, then each baseline, each on a fresh namespace; the max
  |score difference| per event id is reported and must be <= 1e-5.
- **Stages** (in-process, fraud and spam): decode, feature read, feature compute,
  model, feature write, decision build per event at batch ``STREAMINFER_BATCH_MAX``.

Writes ``bench/<UTC time>-<quick|full>.json`` (everything) and ``.md`` (short tables)
stamped with the machine; the last stdout line is one JSON object with flat dotted
keys (``fraud.events_per_s`` ...; see ``SUMMARY_KEYS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson

from streams.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Keys of the last stdout line (flat, dotted). Values are numbers, or null when a
#: measurement failed (its error is in the JSON file's ``errors``).
SUMMARY_KEYS: tuple[str, ...] = (
    "fraud.events_per_s", "fraud.p50_ms", "fraud.p99_ms", "fraud.p999_ms",
    "fraud.two_workers_events_per_s", "fraud.baseline_per_message_events_per_s",
    "fraud.baseline_faust_events_per_s", "spam.events_per_s", "spam.p99_ms",
    "spam.baseline_per_message_events_per_s",
)

SCORE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Profile:
    name: str
    fraud_n: int  # saturation, one worker
    fraud2_n: int  # saturation, two workers
    baseline_n: int  # per-message loop, fraud
    faust_n: int  # faust agent, fraud
    equality_n: int  # one-partition equality check
    spam_n: int
    spam_baseline_n: int
    phase_s: float  # each fraud latency phase
    spam_phase_s: float
    fractions: tuple[float, ...] = (0.25, 0.5, 0.8)
    stage_n: int = 5000
    sim_days: int = 30
    timeout_s: float = 180.0  # per measurement


QUICK = Profile("quick", fraud_n=30_000, fraud2_n=30_000, baseline_n=3_000, faust_n=4_000, equality_n=1_000,
                spam_n=3_000, spam_baseline_n=600, phase_s=5.0, spam_phase_s=5.0, stage_n=3000, sim_days=30,
                timeout_s=120.0)
FULL = Profile("full", fraud_n=150_000, fraud2_n=150_000, baseline_n=20_000, faust_n=20_000, equality_n=5_000,
               spam_n=8_000, spam_baseline_n=2_000, phase_s=30.0, spam_phase_s=30.0, stage_n=20_000, sim_days=60,
               timeout_s=600.0)


# ------------------------------------------------------------------ pure helpers (unit-tested)

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ascending ``sorted_values`` (``q`` in [0, 100]); nan if empty."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    rank = max(1, math.ceil(round(q * n / 100.0, 9)))  # round: 99.9% of 1000 is 999, not 999.0000001
    return float(sorted_values[min(rank, n) - 1])


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """n, mean, p50, p99, p99.9 and max of latencies (ms), rounded to 0.01 ms."""
    v = sorted(float(x) for x in values_ms)
    if not v:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    r = lambda x: round(x, 2)  # noqa: E731
    return {"n": len(v), "mean_ms": r(sum(v) / len(v)), "p50_ms": r(percentile(v, 50)),
            "p99_ms": r(percentile(v, 99)), "p999_ms": r(percentile(v, 99.9)), "max_ms": r(v[-1])}


def due(elapsed_s: float, rate_per_s: float) -> int:
    """How many records a producer paced at ``rate_per_s`` should have sent ``elapsed_s``
    after its start (record k is due at k / rate; record 0 at once)."""
    if rate_per_s <= 0:
        raise ValueError("rate must be > 0")
    if elapsed_s < 0:
        return 0
    return int(math.floor(elapsed_s * rate_per_s + 1e-9)) + 1


def throughput(ts_ms: Sequence[int], start_ms: int | None = None) -> dict[str, Any]:
    """Events/s from append timestamps: of the events appended at or after ``start_ms``
    (default: all), those appended after the first instant, over the span from the
    first to the last of them."""
    ts = sorted(t for t in ts_ms if start_ms is None or t >= start_ms)
    if len(ts) < 2 or ts[-1] == ts[0]:
        return {"events_per_s": None, "n": len(ts), "span_s": 0.0, "reliable": False}
    span = (ts[-1] - ts[0]) / 1000.0
    # The decisions appended at the first instant (the first batch) were made before the
    # span began; count only those appended within it.
    inside = sum(1 for t in ts if t > ts[0])
    # Under a second of decisions is a few batches: the figure is noise, say so.
    return {"events_per_s": round(inside / span, 1), "n": len(ts), "span_s": round(span, 3),
            "reliable": span >= 1.0}


def cpu_per_event(samples: Sequence[tuple[float, int, float]], n_target: int) -> float | None:
    """µs of CPU per decision from ``(wall_s, decisions so far, cpu_s)`` samples: between
    the first sample with any decision and the first with ``n_target`` (or the last)."""
    started = [s for s in samples if s[1] > 0]
    if len(started) < 2:
        return None
    first = started[0]
    last = next((s for s in started if s[1] >= n_target), started[-1])
    dn = last[1] - first[1]
    if dn <= 0:
        return None
    return round((last[2] - first[2]) / dn * 1e6, 2)


def flat_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The last stdout line: ``SUMMARY_KEYS`` (and a few more) from the full result."""
    f = result.get("fraud", {})
    s = result.get("spam", {})

    def g(d: dict[str, Any], *path: str) -> Any:
        for p in path:
            if not isinstance(d, dict):
                return None
            d = d.get(p)  # type: ignore[assignment]
        return d

    out = {
        "fraud.events_per_s": g(f, "saturation", "events_per_s"),
        "fraud.p50_ms": g(f, "latency", "0.5", "p50_ms"),
        "fraud.p99_ms": g(f, "latency", "0.5", "p99_ms"),
        "fraud.p999_ms": g(f, "latency", "0.5", "p999_ms"),
        "fraud.two_workers_events_per_s": g(f, "two_workers", "events_per_s"),
        "fraud.two_workers_p99_ms": g(f, "two_workers_latency", "0.5", "p99_ms"),
        "fraud.baseline_per_message_events_per_s": g(f, "baseline_per_message", "events_per_s"),
        "fraud.baseline_faust_events_per_s": g(f, "baseline_faust", "events_per_s"),
        "spam.events_per_s": g(s, "saturation", "events_per_s"),
        "spam.p99_ms": g(s, "latency", "0.5", "p99_ms"),
        "spam.baseline_per_message_events_per_s": g(s, "baseline_per_message", "events_per_s"),
        "fraud.cpu_us_per_event": g(f, "saturation", "cpu_us_per_event"),
        "fraud.peak_rss_mb": g(f, "saturation", "peak_rss_mb"),
        "spam.cpu_us_per_event": g(s, "saturation", "cpu_us_per_event"),
        "fraud.equality_max_score_diff_per_message": g(f, "equality", "per_message", "max_score_diff"),
        "fraud.equality_max_score_diff_faust": g(f, "equality", "faust", "max_score_diff"),
        "targets_met": None,
        "mode": result.get("mode"),
        "file": result.get("file"),
    }
    t = result.get("targets") or []
    out["targets_met"] = f"{sum(1 for x in t if x['met'])}/{len(t)}"
    return out


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return None
    return round(a / b, 2)


def targets(flat: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's targets, each met or not, with the figure (``met`` is False when the figure is missing)."""
    fe = flat.get("fraud.events_per_s")
    se = flat.get("spam.events_per_s")
    rows: list[tuple[str, Any, Callable[[Any], bool]]] = [
        ("fraud events/s per worker >= 100,000", fe, lambda v: v >= 100_000),
        ("fraud >= 5x baseline (a) per-message", _ratio(fe, flat.get("fraud.baseline_per_message_events_per_s")),
         lambda v: v >= 5),
        ("fraud >= 3x baseline (b) faust", _ratio(fe, flat.get("fraud.baseline_faust_events_per_s")),
         lambda v: v >= 3),
        ("spam emails/s per worker >= 30,000", se, lambda v: v >= 30_000),
        ("spam >= 5x baseline (a) per-message", _ratio(se, flat.get("spam.baseline_per_message_events_per_s")),
         lambda v: v >= 5),
        ("fraud p99 <= 25 ms at 50% of saturation", flat.get("fraud.p99_ms"), lambda v: v <= 25),
        ("fraud p99.9 <= 50 ms at 50% of saturation", flat.get("fraud.p999_ms"), lambda v: v <= 50),
        ("spam p99 <= 25 ms at 50% of saturation", flat.get("spam.p99_ms"), lambda v: v <= 25),
        ("2 fraud workers >= 1.6x one", _ratio(flat.get("fraud.two_workers_events_per_s"), fe), lambda v: v >= 1.6),
        ("same decisions as per-message baseline (max |score diff| <= 1e-5)",
         flat.get("fraud.equality_max_score_diff_per_message"), lambda v: v <= SCORE_TOLERANCE),
        ("same decisions as faust baseline (max |score diff| <= 1e-5)",
         flat.get("fraud.equality_max_score_diff_faust"), lambda v: v <= SCORE_TOLERANCE),
    ]
    return [{"target": name, "figure": v, "met": bool(v is not None and ok(v))} for name, v, ok in rows]


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and v and abs(v) < 0.01:
        return f"{v:.1e}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    """The short tables of the ``.md`` file."""
    f, s, m = result.get("fraud", {}), result.get("spam", {}), result.get("machine", {})
    lines = [f"# streaminfer bench, {result.get('mode')} run, {result.get('started_utc')}", "",
             f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('mem_gib')} GiB RAM, "
             f"load average at start {m.get('loadavg_start')}; python {m.get('python')}, torch {m.get('torch')}, "
             f"confluent-kafka {m.get('confluent_kafka')} (librdkafka {m.get('librdkafka')}), "
             f"commit {m.get('git_commit')}{' (dirty)' if m.get('git_dirty') else ''}. "
             "Kafka and Redis run on the same machine and share its cores.", "",
             "| measurement | events/s | p50 ms | p99 ms | p99.9 ms | worker CPU µs/event | Kafka+Redis CPU µs/event | peak RSS MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def sat_row(name: str, d: dict[str, Any] | None) -> None:
        d = d or {}
        lines.append(f"| {name} | {_fmt(d.get('events_per_s'))} | | | | {_fmt(d.get('cpu_us_per_event'))} | "
                     f"{_fmt(d.get('stack_cpu_us_per_event'))} | {_fmt(d.get('peak_rss_mb'))} |")

    def lat_rows(name: str, lat: dict[str, Any] | None) -> None:
        for frac, d in (lat or {}).items():
            lines.append(f"| {name} at {float(frac):.0%} of saturation ({_fmt(d.get('offered_per_s'))}/s offered, "
                         f"n={d.get('n')}) | {_fmt(d.get('achieved_per_s'))} | {_fmt(d.get('p50_ms'), 2)} | "
                         f"{_fmt(d.get('p99_ms'), 2)} | {_fmt(d.get('p999_ms'), 2)} | | | |")

    sat_row("fraud, streaminfer, 1 worker, saturation", f.get("saturation"))
    lat_rows("fraud, streaminfer, 1 worker", f.get("latency"))
    sat_row("fraud, streaminfer, 2 workers, saturation", f.get("two_workers"))
    lat_rows("fraud, streaminfer, 2 workers", f.get("two_workers_latency"))
    sat_row("fraud, baseline (a) per-message loop", f.get("baseline_per_message"))
    sat_row("fraud, baseline (b) faust agent (take_events)", f.get("baseline_faust"))
    sat_row("spam, streaminfer, 1 worker, saturation", s.get("saturation"))
    lat_rows("spam, streaminfer, 1 worker", s.get("latency"))
    sat_row("spam, baseline (a) per-message loop", s.get("baseline_per_message"))
    eq = f.get("equality") or {}
    lines += ["", "Same decisions (one-partition topic, fresh namespaces, same events): "
              + "; ".join(f"{k}: {v.get('compared')} events compared, max |score diff| {v.get('max_score_diff')}, "
                          f"actions differing {v.get('actions_differ')}, missing {v.get('missing')}"
                          for k, v in eq.items() if isinstance(v, dict)), ""]
    for p in ("fraud", "spam"):
        st = (result.get(p) or {}).get("stages")
        if st:
            lines.append(f"{p} stages in-process (µs/event at batch {st.get('batch')}): "
                         + ", ".join(f"{k} {v}" for k, v in st.get("us_per_event", {}).items()))
        for key, who in (("worker_stages", "1 worker"), ("two_workers_stages", "2 workers")):
            ws = (result.get(p) or {}).get(key)
            if ws:
                lines.append(f"{p} stages as timed by the worker processes ({who}, µs/event over "
                             f"{ws.get('events'):,} events): "
                             + ", ".join(f"{k} {v}" for k, v in ws.get("us_per_event", {}).items()))
    lines += ["", "| issue 5 target | figure | met |", "| --- | ---: | --- |"]
    for t in result.get("targets", []):
        lines.append(f"| {t['target']} | {_fmt(t['figure'], 2) if isinstance(t['figure'], float) else _fmt(t['figure'])} "
                     f"| {'yes' if t['met'] else 'no'} |")
    if result.get("errors"):
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in result["errors"].items())]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ machine facts

def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_facts() -> dict[str, Any]:
    import confluent_kafka

    cpu_model = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                      if ln.startswith("model name")), platform.processor())
    mem_kb = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines() if ln.startswith("MemTotal")), 0)
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(), "cpu_model": cpu_model, "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "loadavg_start": _read("/proc/loadavg").split()[:3], "kernel": platform.release(),
        "python": platform.python_version(), "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
    }
    for mod in ("torch", "numpy", "redis", "orjson", "faust", "aiokafka"):
        try:
            facts[mod] = __import__(mod).__version__
        except Exception:
            facts[mod] = None
    try:
        facts["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                             capture_output=True, text=True, timeout=10).stdout.strip()
        facts["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                                 cwd=REPO_ROOT, capture_output=True, text=True,
                                                 timeout=10).stdout.strip())
    except Exception:
        facts["git_commit"], facts["git_dirty"] = None, None
    return facts


# ------------------------------------------------------------------ processes

_CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, seconds (None if it is gone)."""
    s = _read(f"/proc/{pid}/stat")
    if not s:
        return None
    fields = s.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def proc_hwm_mb(pid: int) -> float | None:
    for ln in _read(f"/proc/{pid}/status").splitlines():
        if ln.startswith("VmHWM:"):
            return round(int(ln.split()[1]) / 1024, 1)
    return None


def stack_pids() -> dict[str, int]:
    """The local broker's and Redis' pids from ``.stack/run`` (for their CPU per event)."""
    out = {}
    for f in sorted((REPO_ROOT / ".stack" / "run").glob("*.pid")):
        try:
            pid = int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        if proc_cpu_s(pid) is not None:
            out[f.stem] = pid
    return out


# ------------------------------------------------------------------ the harness

class Bench:
    def __init__(self, settings: Settings, profile: Profile, logdir: Path) -> None:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.settings = settings
        self.profile = profile
        self.run = f"bench-{uuid.uuid4().hex[:6]}"
        self.logdir = logdir
        self.admin = AdminClient(settings.kafka_config())
        self.offsets = Consumer({**settings.kafka_config(), "group.id": f"{self.run}-offsets",
                                 "enable.auto.commit": False})
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stack = stack_pids()
        self._producer: Any = None

    # -- topics, records ----------------------------------------------------
    def prefix(self, label: str) -> str:
        return f"{self.settings.topic_prefix}{self.run}.{label}."

    def namespace(self, label: str) -> str:
        ns = f"{self.run}-{label}"
        self.namespaces.append(ns)
        return ns

    def create_topics(self, names: Sequence[str], partitions: int) -> None:
        from confluent_kafka.admin import NewTopic

        futs = self.admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=self.settings.replication_factor,
                      config={"message.timestamp.type": "LogAppendTime"}) for n in names],
            operation_timeout=30, request_timeout=30)
        for f in futs.values():
            f.result()

    def producer(self) -> Any:
        """The run's one producer, connected before its first use: a paced phase must not
        start with records held back while the producer connects and gets its idempotent
        producer id (they would then be appended in one burst, which reads as latency)."""
        from confluent_kafka import Producer

        if self._producer is None:
            # No compression: the faust baseline's aiokafka has no lz4 codec installed here.
            p = Producer({**self.settings.kafka_config(), "enable.idempotence": True, "acks": "all",
                          "linger.ms": 5})
            p.list_topics(timeout=30)
            p.poll(0.5)
            self._producer = p
        return self._producer

    def send(self, topic: str, records: Sequence[tuple[bytes, bytes]], rate_per_s: float | None = None
             ) -> dict[str, Any]:
        """Produce flat out, or paced at ``rate_per_s`` (``due``); then flush."""
        p = self.producer()
        t0 = time.perf_counter()
        k = 0
        n = len(records)
        while k < n:
            if rate_per_s:
                target = min(n, due(time.perf_counter() - t0, rate_per_s))
                if k >= target:
                    time.sleep(max(0.0, (k / rate_per_s) - (time.perf_counter() - t0)))
                    continue
            else:
                target = n
            while k < target:
                key, value = records[k]
                try:
                    p.produce(topic, key=key, value=value)
                    k += 1
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        sent_s = time.perf_counter() - t0
        left = p.flush(60)
        if left:
            raise RuntimeError(f"{left} records to {topic} not acknowledged")
        return {"sent": n, "seconds": round(sent_s, 3), "achieved_per_s": round(n / sent_s, 1) if sent_s else None}

    def end_offsets(self, topic: str, partitions: int) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        return {p: self.offsets.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)}

    def read(self, topic: str, start: dict[int, int], end: dict[int, int]) -> list[Any]:
        """Every record of ``topic`` in [start, end) per partition."""
        from confluent_kafka import Consumer, TopicPartition

        want = {p: e for p, e in end.items() if e > start.get(p, 0)}
        if not want:
            return []
        c = Consumer({**self.settings.kafka_config(), "group.id": f"{self.run}-reader", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, p, start.get(p, 0)) for p in want])
        out: list[Any] = []
        pos = {p: start.get(p, 0) for p in want}
        deadline = time.monotonic() + 120
        try:
            while any(pos[p] < want[p] for p in want) and time.monotonic() < deadline:
                for m in c.consume(2000, 0.5):
                    if m.error() is None and m.offset() < want[m.partition()]:
                        out.append(m)
                        pos[m.partition()] = m.offset() + 1
        finally:
            c.close()
        return out

    # -- processes ------------------------------------------------------------
    def start(self, argv: list[str], prefix: str, namespace: str, partitions: int, name: str
              ) -> subprocess.Popen[bytes]:
        env = {**os.environ, "STREAMINFER_TOPIC_PREFIX": prefix, "STREAMINFER_FEATURE_NAMESPACE": namespace,
               "STREAMINFER_PARTITIONS": str(partitions), "PYTHONUNBUFFERED": "1"}
        log = open(self.logdir / f"{name}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", *argv], env=env, stdout=log, stderr=subprocess.STDOUT,
                             cwd=REPO_ROOT)
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(10)

    def _group_stable(self, group: str, members: int) -> bool:
        from confluent_kafka import ConsumerGroupState

        try:
            d = self.admin.describe_consumer_groups([group], request_timeout=5)[group].result()
        except Exception:
            return False
        return (d.state == ConsumerGroupState.STABLE and len(d.members) == members
                and all(m.assignment and m.assignment.topic_partitions for m in d.members))

    # -- measurements -----------------------------------------------------------
    def saturate(self, label: str, argv: list[str], pipeline: str, records: Sequence[tuple[bytes, bytes]],
                 workers: int = 1, partitions: int = 6, group: str | None = None, keep: bool = False
                 ) -> dict[str, Any]:
        """Pre-load ``records``, start ``workers`` processes of ``argv``, time the decisions."""
        from streams.pipelines import topics_for

        prefix, ns = self.prefix(label), self.namespace(label)
        topics = topics_for(pipeline, prefix)
        self.create_topics(topics.all(), partitions)
        self.send(topics.input, records)
        n = len(records)
        procs = [self.start(argv, prefix, ns, partitions, f"{label}-{i}") for i in range(workers)]
        pids = [p.pid for p in procs]
        samples: list[tuple[float, int, float]] = []
        stack_samples: list[tuple[float, int, float]] = []
        stable_ms: int | None = None if workers > 1 else 0
        deadline = time.monotonic() + self.profile.timeout_s
        count = 0
        while True:
            count = sum(self.end_offsets(topics.decisions, partitions).values())
            cpu = [proc_cpu_s(pid) for pid in pids]
            now = time.time()
            samples.append((now, count, sum(c or 0.0 for c in cpu)))
            stack_samples.append((now, count, sum(proc_cpu_s(pid) or 0.0 for pid in self.stack.values())))
            if stable_ms is None and group and self._group_stable(group, workers):
                stable_ms = int(time.time() * 1000)
            if count >= n:
                break
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{label}: a process exited with {dead[0].returncode} "
                                   f"(log {self.logdir}/{label}-*.log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {count}/{n} decisions after {self.profile.timeout_s:.0f} s")
            time.sleep(0.2)
        rss = [proc_hwm_mb(pid) for pid in pids]
        msgs = self.read(topics.decisions, {}, self.end_offsets(topics.decisions, partitions))
        ts = [m.timestamp()[1] for m in msgs]
        tput = throughput(ts, stable_ms or None)
        decided = [orjson.loads(m.value()) for m in msgs]
        out: dict[str, Any] = {
            **tput, "events": n, "decisions": len(decided), "distinct": len({d["event_id"] for d in decided}),
            "workers": workers, "partitions": partitions,
            "window_from": "group stable with all members assigned" if workers > 1 else "first decision",
            "cpu_us_per_event": cpu_per_event(samples, n), "stack_cpu_us_per_event": cpu_per_event(stack_samples, n),
            "peak_rss_mb": max((r for r in rss if r is not None), default=None), "peak_rss_mb_each": rss,
            "timestamp_type": msgs[0].timestamp()[0] if msgs else None,
        }
        if workers > 1 and stable_ms is None:
            out["window_from"] = "first decision (group never seen stable: includes the join)"
            out.update(throughput(ts))
        out["_scores"] = {d["event_id"]: (d["score"], d["action"]) for d in decided}
        out["_topics"], out["_procs"] = topics, procs
        if not keep:
            for p in procs:
                self.stop(p)
        return out

    def saturate_and_pace(self, out: dict[str, Any], keys: tuple[str, str, str], label: str, argv: list[str],
                          pipeline: str, records: Iterator[tuple[bytes, bytes]], n: int,
                          fractions: Sequence[float], phase_s: float, workers: int = 1, group: str | None = None
                          ) -> None:
        """Saturation on ``n`` pre-loaded records, then paced phases at ``fractions`` of its
        rate on the same processes; fills ``out`` under ``keys`` (saturation, latency by
        fraction, the workers' own stage times) as each part completes."""
        sat_key, lat_key, stages_key = keys
        sat = self.saturate(label, argv, pipeline, take(records, n), workers=workers, group=group, keep=True)
        out[sat_key] = _public(sat)
        out[lat_key] = {}
        try:
            if sat.get("events_per_s"):
                for frac in fractions:
                    out[lat_key][str(frac)] = self.latency(sat, records, frac, phase_s)
        finally:
            for p in sat["_procs"]:
                self.stop(p)
        out[stages_key] = worker_stages([self.logdir / f"{label}-{i}.log" for i in range(workers)])

    def latency(self, sat: dict[str, Any], records: Iterator[tuple[bytes, bytes]], frac: float, seconds: float,
                partitions: int = 6) -> dict[str, Any]:
        """A paced phase at ``frac`` of the saturation rate on the running workers of ``sat``."""
        topics = sat["_topics"]
        rate = frac * sat["events_per_s"]
        n = max(50, int(rate * seconds))
        batch = [next(records) for _ in range(n)]
        in0 = self.end_offsets(topics.input, partitions)
        out0 = self.end_offsets(topics.decisions, partitions)
        sent = self.send(topics.input, batch, rate_per_s=rate)
        want = sum(out0.values()) + n
        deadline = time.monotonic() + self.profile.timeout_s
        while sum(self.end_offsets(topics.decisions, partitions).values()) < want:
            dead = [p for p in sat["_procs"] if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"latency phase at {frac:.0%}: decisions missing (worker exited: {bool(dead)})")
            time.sleep(0.2)
        ins = self.read(topics.input, in0, self.end_offsets(topics.input, partitions))
        outs = self.read(topics.decisions, out0, self.end_offsets(topics.decisions, partitions))
        in_ts = {(m.partition(), m.offset()): m.timestamp()[1] for m in ins}
        lat: list[float] = []
        seen: set[tuple[int, int]] = set()
        for m in outs:
            src = orjson.loads(m.value())["source"]
            k = (src["partition"], src["offset"])
            if k in in_ts and k not in seen:
                seen.add(k)
                lat.append(m.timestamp()[1] - in_ts[k])
        return {"offered_per_s": round(rate, 1), "achieved_per_s": sent["achieved_per_s"], "seconds": seconds,
                **latency_summary(lat)}

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.stop(p, 15)
        try:
            names = [t for t in self.admin.list_topics(timeout=10).topics
                     if t.startswith(f"{self.settings.topic_prefix}{self.run}.")]
            if names:
                for f in self.admin.delete_topics(names, operation_timeout=30).values():
                    try:
                        f.result()
                    except Exception as exc:
                        print(f"bench: could not delete a topic: {exc}", file=sys.stderr)
        except Exception as exc:
            print(f"bench: topic clean-up failed: {exc}", file=sys.stderr)
        try:  # the workers' and baselines' consumer groups (their committed offsets)
            groups = [g.group_id for g in self.admin.list_consumer_groups(request_timeout=10).result().valid
                      if g.group_id.startswith(f"{self.settings.topic_prefix}{self.run}.")]
            if groups:
                for f in self.admin.delete_consumer_groups(groups, request_timeout=30).values():
                    try:
                        f.result()
                    except Exception:
                        pass
        except Exception as exc:
            print(f"bench: consumer group clean-up failed: {exc}", file=sys.stderr)
        try:
            from feature_store.keys import namespace_pattern
            from feature_store.store import connect

            r = connect(self.settings.redis_url.get(), 5.0)
            for ns in self.namespaces:
                keys = list(r.scan_iter(match=namespace_pattern(ns), count=1000))
                for i in range(0, len(keys), 1000):
                    r.delete(*keys[i:i + 1000])
            r.close()
        except Exception as exc:
            print(f"bench: Redis clean-up failed: {exc}", file=sys.stderr)
        self.offsets.close()


# ------------------------------------------------------------------ data

def fraud_events(days: int) -> list[dict[str, Any]]:
    from models.fraud_sim import SimConfig, generate

    sim = generate(SimConfig(n_customers=2000, n_terminals=4000, n_days=days, start_date="2026-09-01", seed=2027))
    return list(sim.events())


def cycled(events: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], str], start: int = 0
           ) -> Iterator[tuple[bytes, bytes]]:
    """``(key, JSON)`` records cycling through ``events`` from index ``start``; every pass after
    the first gives the events fresh ids (``<id>.<pass>``)."""
    i = start
    n = len(events)
    while True:
        e = events[i % n]
        cyc = i // n
        if cyc:
            e = {**e, "event_id": f"{e['event_id']}.{cyc}"}
        yield key(e).encode(), orjson.dumps(e)
        i += 1


def take(it: Iterator[tuple[bytes, bytes]], n: int) -> list[tuple[bytes, bytes]]:
    return [next(it) for _ in range(n)]


def spam_test_events(corpus_dir: str) -> list[dict[str, Any]]:
    from models.corpus import corpus_files, load_corpus, split_of

    names = [n for n, _ in corpus_files(corpus_dir) if split_of(n) == "test"]
    msgs = load_corpus(corpus_dir, names)
    random.Random(2026).shuffle(msgs)  # mix ham and spam folders
    return [m.event for m in msgs]


# ------------------------------------------------------------------ stages (in-process)

def stage_profile(settings: Settings, bench: Bench, pipeline: str, records: list[tuple[bytes, bytes]]
                  ) -> dict[str, Any]:
    """µs/event of each stage of the worker's batch path, with the real Redis, in this process."""
    from feature_store.store import FeatureStore, connect
    from streams.decisions import action_for, build_decision
    from streams.pipelines import build_scorer

    store = FeatureStore(connect(settings.redis_url.get(), settings.redis_timeout_s), bench.namespace(f"stages-{pipeline}"))
    scorer: Any = build_scorer(pipeline, store, str(settings.model_dir), settings.device, False)
    t: dict[str, float] = {"decode": 0.0, "feature_read": 0.0, "features_model_other": 0.0, "feature_write": 0.0,
                           "decision_build": 0.0}
    orig_read, orig_write = store.read, store.write

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def w(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t[name] += time.perf_counter() - t0
        return w

    store.read = timed("feature_read", orig_read)  # type: ignore[method-assign]
    store.write = timed("feature_write", orig_write)  # type: ignore[method-assign]
    bs = settings.batch_max
    n = 0
    for i in range(0, len(records), bs):
        chunk = records[i:i + bs]
        t0 = time.perf_counter()
        events = [scorer.decode(v) for _, v in chunk]
        t1 = time.perf_counter()
        scored = scorer.score(events)
        t2 = time.perf_counter()
        now = time.time()
        for j, e in enumerate(events):
            s = float(scored.scores[j])
            orjson.dumps(build_decision(event_id=e.event_id, pipeline=pipeline, score=s,
                                        action=action_for(pipeline, s, scorer.thresholds),
                                        model_name=scorer.model_name, model_version=scorer.model_version,
                                        reasons=scored.reasons[j], topic="t", partition=0, offset=j,
                                        event_ts_s=e.ts_s, input_ts_ms=int(now * 1000), now_s=now))
        t3 = time.perf_counter()
        t["decode"] += t1 - t0
        t["features_model_other"] += t2 - t1
        t["decision_build"] += t3 - t2
        n += len(events)
    # features_model_other held read and write too: take them out.
    t["features_model_other"] -= t["feature_read"] + t["feature_write"]
    scorer.close()
    us = {k: round(v / n * 1e6, 1) for k, v in t.items()}
    us["total"] = round(sum(t.values()) / n * 1e6, 1)
    return {"batch": bs, "events": n, "us_per_event": us,
            "note": "features_model_other = feature compute + model + reasons (everything in score() "
                    "but the Redis read and write)"}


def _public(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """A measurement without its private parts (processes, topics, raw scores)."""
    return None if d is None else {k: v for k, v in d.items() if not k.startswith("_")}


def worker_stages(logs: Sequence[Path]) -> dict[str, Any] | None:
    """µs per event of each stage as the worker processes themselves timed them (their
    final ``worker stopped: {...}`` log line), over every event they decided in the run."""
    import ast

    total: dict[str, float] = {}
    events = 0
    for path in logs:
        try:
            line = [ln for ln in path.read_text(errors="replace").splitlines() if "worker stopped: " in ln][-1]
        except (OSError, IndexError):
            return None
        stats = ast.literal_eval(line.split("worker stopped: ", 1)[1])
        events += int(stats.get("events_in", 0))
        for k, v in (stats.get("stage_s") or {}).items():
            total[k] = total.get(k, 0.0) + float(v)
    if not events:
        return None
    return {"events": events, "us_per_event": {k: round(v / events * 1e6, 1) for k, v in total.items()},
            "note": "decode; score = features (Redis read, compute, Redis write) + model + reasons; produce = "
                    "decisions built and handed to the producer; commit = at-least-once: waiting for earlier "
                    "batches' acknowledgements and committing them (pipelined), exactly-once: the transaction"}


# ------------------------------------------------------------------ equality

def compare(ref: dict[str, tuple[float, str]], other: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """Max |score difference| per event id between two runs; missing ids and differing actions."""
    common = ref.keys() & other.keys()
    diffs = [abs(ref[k][0] - other[k][0]) for k in common]
    return {"compared": len(common), "missing": len(ref.keys() ^ other.keys()),
            "max_score_diff": max(diffs) if diffs else None,
            "actions_differ": sum(1 for k in common if ref[k][1] != other[k][1]),
            "equal": bool(common) and len(ref) == len(other) == len(common)
            and max(diffs) <= SCORE_TOLERANCE}


# ------------------------------------------------------------------ main

def run_bench(profile: Profile, out_dir: Path, corpus: str, only: set[str] | None = None) -> dict[str, Any]:
    settings = Settings.from_env()
    started = time.gmtime()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", started)
    logdir = REPO_ROOT / ".stack" / "logs" / f"bench-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"mode": profile.name, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
                              "machine": machine_facts(), "profile": dataclasses.asdict(profile),
                              "settings": {"batch_max": settings.batch_max, "batch_wait_ms": settings.batch_wait_ms,
                                           "latency_budget_ms": settings.latency_budget_ms,
                                           "device": settings.device, "partitions": 6,
                                           "kafka": settings.kafka_bootstrap},
                              "fraud": {}, "spam": {}, "errors": {}, "logs": str(logdir)}
    bench = Bench(settings, profile, logdir)
    result["run"] = bench.run
    t_start = time.monotonic()
    fraud, spam = result["fraud"], result["spam"]

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if only is not None and name.split(".")[0] not in only and name not in only:
            return None
        t0 = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            return fn()
        except Exception as exc:
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"bench: {name} failed: {exc}", file=sys.stderr, flush=True)
            return None
        finally:
            print(f"bench: {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

    public = _public
    try:
        events = fraud_events(profile.sim_days)
        card = lambda e: e["card_id"]  # noqa: E731
        result["data"] = {"fraud_events_generated": len(events)}
        worker = ["streams.cli", "run"]

        # saturation, then the paced phases on the same processes (one worker, then two)
        step("fraud.saturation+latency", lambda: bench.saturate_and_pace(
            fraud, ("saturation", "latency", "worker_stages"), "fraud1", worker + ["fraud"], "fraud",
            cycled(events, card), profile.fraud_n, profile.fractions, profile.phase_s))
        step("fraud.two_workers", lambda: bench.saturate_and_pace(
            fraud, ("two_workers", "two_workers_latency", "two_workers_stages"), "fraud2", worker + ["fraud"],
            "fraud", cycled(events, card), profile.fraud2_n, profile.fractions, profile.phase_s, workers=2,
            group=f"{bench.prefix('fraud2')}streaminfer-fraud"))
        step("fraud.baseline_per_message", lambda: fraud.__setitem__("baseline_per_message", public(bench.saturate(
            "base-a", ["streams.baselines", "per-message", "fraud"], "fraud",
            take(cycled(events, card), profile.baseline_n)))))
        step("fraud.baseline_faust", lambda: fraud.__setitem__("baseline_faust", public(bench.saturate(
            "base-b", ["streams.baselines", "faust", "fraud"], "fraud", take(cycled(events, card), profile.faust_n)))))

        def equality() -> None:
            recs = take(cycled(events, card), profile.equality_n)
            ref = bench.saturate("eq-si", worker + ["fraud"], "fraud", recs, partitions=1)["_scores"]
            eq: dict[str, Any] = {"events": len(recs), "partitions": 1}
            for name, argv in (("per_message", ["streams.baselines", "per-message", "fraud"]),
                               ("faust", ["streams.baselines", "faust", "fraud"])):
                try:
                    other = bench.saturate(f"eq-{name}", argv, "fraud", recs, partitions=1)["_scores"]
                    eq[name] = compare(ref, other)
                except Exception as exc:
                    eq[name] = {"error": f"{type(exc).__name__}: {exc}"}
            fraud["equality"] = eq

        step("fraud.equality", equality)
        step("fraud.stages", lambda: fraud.__setitem__("stages", stage_profile(
            settings, bench, "fraud", take(cycled(events, card), profile.stage_n))))

        mails = spam_test_events(corpus)
        first_to = lambda e: e["to"][0]  # noqa: E731
        result["data"]["spam_test_emails"] = len(mails)

        step("spam.saturation+latency", lambda: bench.saturate_and_pace(
            spam, ("saturation", "latency", "worker_stages"), "spam1", worker + ["spam"], "spam",
            cycled(mails, first_to), profile.spam_n, (0.5,), profile.spam_phase_s))
        step("spam.baseline_per_message", lambda: spam.__setitem__("baseline_per_message", public(bench.saturate(
            "spam-a", ["streams.baselines", "per-message", "spam"], "spam",
            take(cycled(mails, first_to), profile.spam_baseline_n)))))
        step("spam.stages", lambda: spam.__setitem__("stages", stage_profile(
            settings, bench, "spam", take(cycled(mails, first_to), min(profile.stage_n, 2000)))))
    finally:
        bench.cleanup()
    result["seconds"] = round(time.monotonic() - t_start, 1)
    result["machine"]["loadavg_end"] = _read("/proc/loadavg").split()[:3]
    result["ratios"] = {
        "fraud_vs_per_message": _ratio((fraud.get("saturation") or {}).get("events_per_s"),
                                       (fraud.get("baseline_per_message") or {}).get("events_per_s")),
        "fraud_vs_faust": _ratio((fraud.get("saturation") or {}).get("events_per_s"),
                                 (fraud.get("baseline_faust") or {}).get("events_per_s")),
        "fraud_two_vs_one": _ratio((fraud.get("two_workers") or {}).get("events_per_s"),
                                   (fraud.get("saturation") or {}).get("events_per_s")),
        "spam_vs_per_message": _ratio((spam.get("saturation") or {}).get("events_per_s"),
                                      (spam.get("baseline_per_message") or {}).get("events_per_s")),
    }
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{stamp}-{profile.name}"
    result["file"] = str(base.with_suffix(".json").relative_to(REPO_ROOT)
                         if base.is_relative_to(REPO_ROOT) else base.with_suffix(".json"))
    result["targets"] = targets(flat_summary(result))
    base.with_suffix(".json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    base.with_suffix(".md").write_text(markdown(result))
    return result


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="small N and short phases (under 5 minutes)")
    ap.add_argument("--out", default=str(REPO_ROOT / "bench"), help="folder for the JSON and markdown results")
    ap.add_argument("--corpus", default=str(REPO_ROOT / "data" / "spamassassin"), help="SpamAssassin corpus folder")
    ap.add_argument("--only", default=None,
                    help="comma-separated steps to run (fraud, spam, or e.g. fraud.equality); for debugging")


def run_from_args(args: argparse.Namespace) -> int:
    profile = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else None
    result = run_bench(profile, Path(args.out), args.corpus, only)
    print(markdown(result), flush=True)
    print(orjson.dumps(flat_summary(result)).decode(), flush=True)
    return 0 if not result["errors"] else 1


def register(sub: Any) -> None:
    """``streaminfer bench``: add the subcommand to the CLI's subparsers."""
    b = sub.add_parser("bench", help="benchmark both pipelines and the baselines on the local stack")
    add_arguments(b)
    b.set_defaults(func=lambda args, _settings: run_from_args(args))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.bench", description="streaminfer benchmark")
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
