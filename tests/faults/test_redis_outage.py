"""Redis killed or frozen under load: the pipeline's policy is applied, decisions say
why, latency stays bounded, recovery is automatic, nothing is lost."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from streams.decisions import FEATURE_STORE_UNAVAILABLE
from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from tests.faults.harness import Workers, account, paced_feeder, wait_all_decided, worker_env
from tests.integration.test_pipelines import transactions
from tests.kafka_util import delete_topics, read_topic
from tests.stack import Stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE_PER_S = 300
SECONDS = 30
OUTAGE_AT_S, OUTAGE_S = 8.0, 8.0
#: Per batch while Redis is down: a 0.5 s socket timeout, one client retry, the batch's work.
LATENCY_BUDGET_MS = 2_500


class OwnRedis:
    """A redis-server of this test's own, on a free port, to kill and freeze."""

    def __init__(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(self._answers, 10), "redis-server did not start"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                return c.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    r = OwnRedis(tmp_path)
    yield r
    r.stop()


@pytest.mark.parametrize("policy", ["defaults", "pause"])
@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_redis_outage(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path, own_redis: OwnRedis,
                      fault: str, policy: str) -> None:
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics.all(), 6, 1)
    env = worker_env(stack, prefix, model_dir, STREAMINFER_FRAUD_ON_REDIS_DOWN=policy, STREAMINFER_EMIT_FEATURES="1")
    env["STREAMINFER_REDIS_URL"] = own_redis.url
    workers = Workers(env, logdir=tmp_path)
    workers.start()
    txs = transactions(RATE_PER_S * SECONDS, seed=61)

    wait_for(lambda: (tmp_path / "worker-0.log").read_text().count("fraud worker:") > 0, 60)
    time.sleep(3)  # the worker joins the group
    feeder = paced_feeder(stack.bootstrap, topics.input, txs, RATE_PER_S)
    try:
        time.sleep(OUTAGE_AT_S)
        assert own_redis.proc is not None
        if fault == "kill":
            own_redis.proc.kill()
            own_redis.proc.wait(10)
        else:
            own_redis.proc.send_signal(signal.SIGSTOP)
        down_at = time.time()
        time.sleep(OUTAGE_S)
        if fault == "kill":
            own_redis.start()
        else:
            own_redis.proc.send_signal(signal.SIGCONT)
        up_at = time.time()
        feeder.join(SECONDS + 60)
        wait_all_decided(stack, topics.decisions, len(txs), "read_uncommitted", timeout_s=180, workers=workers)
    finally:
        codes = workers.stop_all()
    assert codes == [0], workers.logs()
    msgs = read_topic(stack.bootstrap, topics.decisions, len(txs), timeout_s=60, grace_s=1)
    decided = [(m.timestamp()[1] / 1000.0, orjson.loads(m.value())) for m in msgs]
    degraded = [(t, d) for t, d in decided if d["reasons"][:1] == [FEATURE_STORE_UNAVAILABLE]]
    during = [d["latency_ms"] for t, d in decided if down_at <= t <= up_at + 1]
    healthy_after = sorted(t for t, d in decided if t > up_at and d["reasons"][:1] != [FEATURE_STORE_UNAVAILABLE])
    recovery_s = healthy_after[0] - up_at if healthy_after else float("inf")
    acc = account(stack, topics.decisions, [t["event_id"] for t in txs], "read_uncommitted")
    acc.report(f"redis-{fault}-{policy}", degraded_decisions=len(degraded),
               decisions_during_outage=len(during), max_latency_ms_during=round(max(during, default=0), 1),
               recovery_s=round(recovery_s, 1))
    assert acc.lost == 0
    assert recovery_s < 15, "recovery is automatic"
    if policy == "defaults":
        assert len(degraded) > 0 and all(d["defaulted"] for _, d in degraded), "the decisions say why"
        assert all(t <= up_at + 15 for t, _ in degraded), "back to real features after recovery"
        assert max(during) <= LATENCY_BUDGET_MS, f"latency during the outage stays in budget: {max(during)} ms"
    else:
        assert not degraded, "pause never decides without features"
    delete_topics(stack.bootstrap, prefix)


def test_sigterm_while_redis_is_down_under_pause(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path,
                                                 own_redis: OwnRedis) -> None:
    """Stopping a worker whose store is down (``pause``: it is retrying a batch) exits 0
    promptly, commits nothing for that batch, and a restarted worker decides it: lost 0."""
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics.all(), 6, 1)
    env = worker_env(stack, prefix, model_dir, STREAMINFER_FRAUD_ON_REDIS_DOWN="pause")
    env["STREAMINFER_REDIS_URL"] = own_redis.url
    workers = Workers(env, logdir=tmp_path)
    first = workers.start()
    txs = transactions(RATE_PER_S * 10, seed=67)
    wait_for(lambda: (tmp_path / "worker-0.log").read_text().count("fraud worker:") > 0, 60)
    time.sleep(3)
    feeder = paced_feeder(stack.bootstrap, topics.input, txs, RATE_PER_S)
    try:
        time.sleep(4)
        assert own_redis.proc is not None
        own_redis.proc.kill()
        own_redis.proc.wait(10)
        time.sleep(2)  # the worker is now retrying a batch against the dead store
        t0 = time.monotonic()
        first.send_signal(signal.SIGTERM)
        code = first.wait(30)
        stop_s = time.monotonic() - t0
        log = (tmp_path / "worker-0.log").read_text(errors="replace")
        assert code == 0, log[-3000:]
        assert "stopping during a feature-store outage" in log
        own_redis.start()
        feeder.join(60)
        workers.start()
        wait_all_decided(stack, topics.decisions, len(txs), "read_uncommitted", timeout_s=120, workers=workers)
    finally:
        codes = workers.stop_all()
    assert codes[-1] == 0, workers.logs()
    acc = account(stack, topics.decisions, [t["event_id"] for t in txs], "read_uncommitted")
    acc.report("redis-down-sigterm-pause", stop_s=round(stop_s, 1))
    assert acc.lost == 0
    assert stop_s < 10, f"a stop during the outage is prompt ({stop_s:.1f} s)"
    delete_topics(stack.bootstrap, prefix)
