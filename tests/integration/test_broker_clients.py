"""Both Kafka clients the project uses talk to the broker version ops/ runs."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka.admin import AdminClient

from streams.kafka_admin import ensure_topics
from tests.kafka_util import delete_topics, produce_all, read_topic
from tests.stack import Stack

pytestmark = pytest.mark.integration


def test_broker_version_and_confluent_kafka(stack: Stack, prefix: str) -> None:
    topic = prefix + "compat"
    ensure_topics({"bootstrap.servers": stack.bootstrap}, [topic], 2, 1)
    produce_all(stack.bootstrap, topic, [(b"k", b"v%d" % i) for i in range(10)])
    assert sorted(m.value() for m in read_topic(stack.bootstrap, topic, 10, grace_s=0)) == sorted(b"v%d" % i for i in range(10))
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    assert admin.describe_cluster().result(10).nodes, "broker answers DescribeCluster"
    delete_topics(stack.bootstrap, prefix)


def test_aiokafka_used_by_faust_produces_consumes_and_commits(stack: Stack, prefix: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = prefix + "aio"
    ensure_topics({"bootstrap.servers": stack.bootstrap}, [topic], 1, 1)

    async def run() -> tuple[list[bytes], int]:
        p = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=True)
        await p.start()
        try:
            for i in range(5):
                await p.send_and_wait(topic, b"m%d" % i)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=stack.bootstrap, group_id=prefix + "g",
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        try:
            got: list[bytes] = []
            while len(got) < 5:
                batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 30)
                got += [m.value for msgs in batch.values() for m in msgs]
            await c.commit()
            committed = await c.committed(TopicPartition(topic, 0))
        finally:
            await c.stop()
        return got, committed

    got, committed = asyncio.run(run())
    assert got == [b"m%d" % i for i in range(5)] and committed == 5
    delete_topics(stack.bootstrap, prefix)
