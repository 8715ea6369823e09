"""The framework's floor: a faust agent that only decodes and re-encodes each record.

    FLOOR_BOOTSTRAP=... FLOOR_INPUT=... FLOOR_OUTPUT=... FLOOR_GROUP=... \\
        faust -A bench.faust_floor worker -l warn

Measured by bench/throughput.py like our worker: records per second until its consumer
group has committed everything. The gap between this and the bare aiokafka loop is what
faust itself costs; the gap between this and our worker is what our state and logic cost.
"""

from __future__ import annotations

import os

import faust
import orjson

from marginstream.stream.worker import quiet_debug_logging

app = faust.App(
    os.environ.get("FLOOR_GROUP", "faust-floor"),
    broker="kafka://" + os.environ.get("FLOOR_BOOTSTRAP", "127.0.0.1:9092"),
    consumer_auto_offset_reset="earliest",
    producer_linger=0.005,
    broker_commit_interval=1.0,
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
)
source = app.topic(os.environ.get("FLOOR_INPUT", "floor-in"))
sink = app.topic(os.environ.get("FLOOR_OUTPUT", "floor-out"))


# The floor gets the two fixes our worker has, so that it is the best a faust agent does
# here: no debug log records built and dropped, and outputs sent straight to the producer.
@app.task
async def quiet() -> None:
    quiet_debug_logging()


@app.agent(source, concurrency=1)
async def copy(stream: faust.StreamT) -> None:
    producer, topic = app.producer, sink.get_topic_name()
    async for event in stream.events():
        value = orjson.dumps(orjson.loads(event.value))
        await producer.send(topic, event.message.key, value, None, None, None)
