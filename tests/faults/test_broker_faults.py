"""Broker faults (issue 4, fault tests 4 and 9), on brokers these tests start themselves.

- Test 4: a single-node broker (its own port, ``CLUSTER_NODES=1 ops/cluster.sh``) is
  stopped for 60 s under load; a producer keeps sending before, during and after; a
  second worker is started while the broker is down. Promise: no crash loop (every
  worker process stays alive: restarts = 0), lost = 0, processing resumes by itself.
- Test 9: a three-node KRaft cluster (``ops/cluster.sh``, replication factor 3,
  min.insync.replicas 2); the broker that coordinates the worker's group is killed with
  SIGKILL under load. Promise: lost = 0 and the worker keeps deciding; in exactly-once
  mode also duplicates = 0 for a read_committed reader.

The shared default stack (localhost:9092) is never touched; Redis is the session
fixture's. Each test prints its figures like ``Accounting.report``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from streams.runner import group_id_for
from streams.settings import Settings
from tests.faults.harness import Accounting, Workers, account, produced, wait_all_decided, worker_env
from tests.integration.test_pipelines import transactions
from tests.kafka_util import read_topic
from tests.stack import ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER_SH = ROOT / "ops" / "cluster.sh"
SINGLE_PORT = 19392  # test 4's own broker (controller 19492)
CLUSTER_PORT = 19192  # test 9's brokers 19192..19194 (controllers 19292..19294)
OUTAGE_S = 60.0


# ------------------------------------------------------------------ brokers


class Brokers:
    """A cluster run by ops/cluster.sh: ``CLUSTER_NODES`` nodes from ``CLUSTER_PORT``."""

    def __init__(self, nodes: int, port: int) -> None:
        self.nodes = nodes
        self.port = port
        self.env = {**os.environ, "CLUSTER_NODES": str(nodes), "CLUSTER_PORT": str(port)}
        self.bootstrap = ",".join(f"127.0.0.1:{port + i}" for i in range(nodes))

    def ops(self, *args: str, timeout_s: float = 180) -> None:
        subprocess.run([str(CLUSTER_SH), *args], env=self.env, check=True, timeout=timeout_s)

    def stack(self, redis_url: str) -> Stack:
        return Stack(self.bootstrap, redis_url, f"cluster-{self.nodes}x{self.port}")


@pytest.fixture(scope="module")
def _cluster_lock() -> Iterator[None]:
    """One run of these tests at a time on this machine (they own fixed ports)."""
    path = ROOT / ".stack" / "cluster" / "tests.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        deadline = time.monotonic() + 900
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another run holds {path} for 15 minutes")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _brokers(nodes: int, port: int) -> Iterator[Brokers]:
    b = Brokers(nodes, port)
    try:
        b.ops("reset", timeout_s=120)  # leftovers of an interrupted run
        b.ops("up")
        yield b
    finally:
        b.ops("reset", timeout_s=120)


@pytest.fixture
def single_broker(_cluster_lock: None) -> Iterator[Brokers]:
    yield from _brokers(1, SINGLE_PORT)


@pytest.fixture(scope="module")
def cluster3(_cluster_lock: None) -> Iterator[Brokers]:
    yield from _brokers(3, CLUSTER_PORT)


# ------------------------------------------------------------------ load and workers


class PacedProducer(threading.Thread):
    """Sends ``events`` at ``rate`` per second, whatever the broker does (librdkafka queues
    while it is away; message.timeout.ms outlasts the outage). Keeps which events the
    broker acknowledged and when each was handed to the producer."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.topic, self.events, self.rate = topic, events, rate
        self.p: Any = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                           "linger.ms": 5, "message.timeout.ms": 300_000, "reconnect.backoff.max.ms": 1000,
                           # connection-refused lines while a broker is away are expected; errors
                           # that matter arrive in the delivery reports
                           "log_level": 2})
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.sent = 0
        self.stop = threading.Event()
        self.done = threading.Event()

    def _report(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked.append(orjson.loads(msg.value())["event_id"])
        else:
            self.errors.append(str(err))

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            for i, e in enumerate(self.events):
                if self.stop.is_set():
                    break
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    self.p.poll(delay)
                while True:
                    try:
                        self.p.produce(self.topic, key=e["card_id"].encode(), value=orjson.dumps(e),
                                       on_delivery=self._report)
                        break
                    except BufferError:
                        self.p.poll(0.1)
                self.sent += 1
                self.p.poll(0)
            left = self.p.flush(180)
            if left:
                self.errors.append(f"{left} records never acknowledged")
        finally:
            self.p = None  # closes its connections before the test's brokers go away
            self.done.set()


class Supervisor(threading.Thread):
    """Keeps ``slots`` worker processes running like a process manager would, and counts
    every restart (a crash loop shows up as restarts > 0)."""

    def __init__(self, workers: Workers, args: tuple[str, ...] = (), max_restarts: int = 20) -> None:
        super().__init__(daemon=True)
        self.workers, self.args, self.max_restarts = workers, args, max_restarts
        self.slots: list[Any] = []
        self.restarts: list[tuple[int, int | None, float]] = []  # (slot, exit code, monotonic time)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.slots.append(self.workers.start(*self.args))

    def run(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                for i, p in enumerate(self.slots):
                    if p.poll() is not None and not self.stop.is_set() and len(self.restarts) < self.max_restarts:
                        self.restarts.append((i, p.returncode, time.monotonic()))
                        self.slots[i] = self.workers.start(*self.args)

    def finish(self, timeout_s: float = 90) -> list[int]:
        """Stop supervising, SIGTERM every live worker; exit codes of the last process of each slot."""
        self.stop.set()
        self.join(5)
        codes = self.workers.stop_all(timeout_s)
        return [codes[self.workers.procs.index(p)] for p in self.slots]


def _end_offsets_safe(stack: Stack, topic: str) -> int | None:
    try:
        return produced(stack, topic)
    except Exception:
        return None


def _wait_decided(stack: Stack, topic: str, at_least: int, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        n = _end_offsets_safe(stack, topic)
        if n is not None and n >= at_least:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"{topic} did not reach {at_least} records in {timeout_s}s "
                         f"(has {_end_offsets_safe(stack, topic)})")


def _decided_times(stack: Stack, topic: str, expected: int, isolation: str) -> list[float]:
    """Every decision's ``decided_ts`` (epoch seconds), sorted."""
    msgs = read_topic(stack.bootstrap, topic, expected, timeout_s=120, grace_s=2, isolation=isolation)
    out = []
    for m in msgs:
        ts = orjson.loads(m.value())["decided_ts"]
        out.append(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    return sorted(out)


def _longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """(gap seconds, end of the gap) of the longest pause between consecutive decisions in [start, end]."""
    window = [t for t in times if start <= t <= end]
    best = (0.0, start)
    prev = start
    for t in window:
        if t - prev > best[0]:
            best = (t - prev, t)
        prev = t
    return best


def _group_members(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        return len(admin.describe_consumer_groups([group], request_timeout=10)[group].result(15).members)
    except Exception:
        return -1


def _group_coordinator(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return int(admin.describe_consumer_groups([group], request_timeout=10)[group].result(15).coordinator.id)


def _topics_ready(bootstrap: str, names: tuple[str, ...], partitions: int, rf: int, timeout_s: float = 60) -> str:
    """Wait until every node serves every topic with all its partitions fully in sync; returns the
    decisions topic's min.insync.replicas (metadata reaches the other brokers a little later)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            for node in bootstrap.split(","):
                md = AdminClient({"bootstrap.servers": node}).list_topics(timeout=10)
                for n in names:
                    parts = md.topics[n].partitions
                    assert len(parts) == partitions and all(
                        p.leader >= 0 and len(p.replicas) == rf and len(p.isrs) == rf for p in parts.values()), n
            res = ConfigResource(ConfigResource.Type.TOPIC, names[1])
            admin = AdminClient({"bootstrap.servers": bootstrap})
            return str(admin.describe_configs([res])[res].result(15)["min.insync.replicas"].value)
        except Exception as exc:  # not there yet
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"topics not ready on every broker in {timeout_s}s: {last!r}")


# ------------------------------------------------------------------ test 4


def test_broker_stopped_60s_under_load(single_broker: Brokers, stack: Stack, prefix: str, model_dir: Path,
                                       tmp_path: Path) -> None:
    """Figures: outage_s (stop issued -> broker answering again), recovery_s (broker answering ->
    the first decision decided after that, by its decided_ts), drain_s (broker answering -> every
    event decided), worker_restarts (processes that exited by themselves and were restarted)."""
    s = single_broker.stack(stack.redis_url)
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": s.bootstrap}, topics.all(), 6, 1)
    rate, before_s, after_s = 200.0, 15.0, 20.0
    events = transactions(int(rate * (before_s + OUTAGE_S + 15 + after_s)), seed=4)
    workers = Workers(worker_env(s, prefix, model_dir, 6), logdir=tmp_path)
    sup = Supervisor(workers)
    sup.add()
    sup.start()
    load = PacedProducer(s.bootstrap, topics.input, events, rate)
    load.start()
    load_t0 = time.monotonic()
    codes: list[int] = []
    try:
        _wait_decided(s, topics.decisions, 500, timeout_s=90)
        time.sleep(max(0.0, before_s - (time.monotonic() - load_t0)))
        assert not load.done.is_set(), "the load still runs when the broker stops"
        t_down = time.monotonic()
        single_broker.ops("stop", "1", timeout_s=90)
        stopped_after_s = time.monotonic() - t_down
        time.sleep(5)
        sup.add()  # a worker started while the broker is down
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
        t_start = time.monotonic()
        single_broker.ops("start", "1", timeout_s=120)
        t_up_wall, t_up = time.time(), time.monotonic()
        start_s = t_up - t_start
        outage_s = t_up - t_down
        load.join(timeout=after_s + 240)
        assert load.done.is_set(), "the producer finished"
        assert not load.errors, load.errors[:5]
        n = len(load.acked)
        wait_all_decided(s, topics.decisions, n, "read_uncommitted", timeout_s=300)
        drain_s = time.monotonic() - t_up
        members = _group_members(s.bootstrap, group_id_for(Settings(topic_prefix=prefix), "fraud"))
    finally:
        codes = sup.finish()
        logs = workers.logs()
    acc = account(s, topics.decisions, load.acked, "read_uncommitted")
    times = _decided_times(s, topics.decisions, len(load.acked), "read_uncommitted")
    after = [t for t in times if t >= t_up_wall]
    recovery_s = round(after[0] - t_up_wall, 1) if after else None
    acc.report("broker-stopped-60s", outage_s=round(outage_s, 1), broker_stop_s=round(stopped_after_s, 1),
               broker_start_s=round(start_s, 1),
               recovery_s=recovery_s, drain_s=round(drain_s, 1), worker_restarts=len(sup.restarts),
               restart_codes=[c for _, c, _ in sup.restarts], group_members=members, exit_codes=codes,
               sent=load.sent)
    assert acc.lost == 0, f"lost {acc.lost}\n{logs}"
    assert not sup.restarts, f"worker processes exited {len(sup.restarts)} times (crash loop): " \
        f"{sup.restarts}\n{logs}"
    assert recovery_s is not None and acc.decided == len(set(load.acked))
    assert codes == [0, 0], logs


# ------------------------------------------------------------------ test 9


def _kill_one_of_three(name: str, cluster: Brokers, stack: Stack, prefix: str, model_dir: Path, tmp_path: Path,
                       *args: str) -> Accounting:
    """Kill -9 the group coordinator of the worker's group under a paced load of 24,000 events.

    Figures: longest_stall_s (longest pause between consecutive decisions, by decided_ts, in the
    minute after the kill), recovery_s (kill -> end of that pause), drain_s (kill -> every event
    decided), decided_after_kill."""
    cluster.ops("up")  # a previous test may have left a node down
    s = cluster.stack(stack.redis_url)
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": s.bootstrap}, topics.all(), 6, 3)
    assert _topics_ready(s.bootstrap, topics.all(), 6, 3) == "2"
    rate = 400.0
    events = transactions(24_000, seed=9)
    workers = Workers(worker_env(s, prefix, model_dir, 6, STREAMINFER_REPLICATION_FACTOR="3"), logdir=tmp_path)
    sup = Supervisor(workers, args)
    sup.add()
    sup.start()
    load = PacedProducer(s.bootstrap, topics.input, events, rate)
    load.start()
    group = group_id_for(Settings(topic_prefix=prefix), "fraud")
    codes: list[int] = []
    try:
        _wait_decided(s, topics.decisions, 6_000, timeout_s=120)
        assert not load.done.is_set(), "the kill comes under load"
        victim = _group_coordinator(s.bootstrap, group)
        before = _end_offsets_safe(s, topics.decisions)
        t_kill_wall, t_kill = time.time(), time.monotonic()
        cluster.ops("kill", str(victim), timeout_s=30)
        load.join(timeout=240)
        assert load.done.is_set(), "the producer finished"
        assert not load.errors, load.errors[:5]
        wait_all_decided(s, topics.decisions, len(load.acked),
                         "read_committed" if args else "read_uncommitted", timeout_s=180)
        drain_s = time.monotonic() - t_kill
    finally:
        codes = sup.finish()
        logs = workers.logs()
    isolation = "read_committed" if args else "read_uncommitted"
    acc = account(s, topics.decisions, load.acked, isolation)
    times = _decided_times(s, topics.decisions, len(load.acked), isolation)
    gap, gap_end = _longest_gap(times, t_kill_wall - 1, t_kill_wall + 60)
    after_kill = sum(1 for t in times if t > t_kill_wall)
    acc.report(name, killed_broker=victim, decisions_before_kill=before, decided_after_kill=after_kill,
               longest_stall_s=round(gap, 1), recovery_s=round(max(0.0, gap_end - t_kill_wall), 1),
               drain_s=round(drain_s, 1), worker_restarts=len(sup.restarts), exit_codes=codes, sent=load.sent)
    assert acc.lost == 0, f"lost {acc.lost}\n{logs}"
    assert after_kill > 0, "the worker kept deciding after the kill"
    assert not sup.restarts, f"worker exited: {sup.restarts}\n{logs}"
    assert codes == [0], logs
    return acc


def test_kill9_one_of_three_brokers_at_least_once(cluster3: Brokers, stack: Stack, prefix: str,
                                                  model_dir: Path, tmp_path: Path) -> None:
    _kill_one_of_three("broker-kill9-rf3-at-least-once", cluster3, stack, prefix, model_dir, tmp_path)


def test_kill9_one_of_three_brokers_exactly_once(cluster3: Brokers, stack: Stack, prefix: str,
                                                 model_dir: Path, tmp_path: Path) -> None:
    acc = _kill_one_of_three("broker-kill9-rf3-exactly-once", cluster3, stack, prefix, model_dir, tmp_path,
                             "--exactly-once")
    assert acc.duplicated == 0
