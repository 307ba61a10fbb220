"""A minimal faust-streaming worker for tests/test_broker.py: appends each message value to a file.

Run from this directory:  python -m faust -A sink_app worker -l info
Configured by environment: SINK_BROKER (host:port), SINK_APP_ID, SINK_TOPIC, SINK_PARTITIONS,
SINK_OUT (output file), SINK_EVENTS (timing marks), SINK_DELAY (seconds of sleep per message),
SINK_DATADIR (faust's data directory; it defaults to <app id>-data in the working directory).
"""

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for streams.faust_config

import faust  # noqa: E402

from streams.faust_config import faust_settings  # noqa: E402

IMPORTED_AT = time.time()
EVENTS = open(os.environ["SINK_EVENTS"], "a", buffering=1)
# Line-buffered: each value is written to the OS before the offset can be acked, so a
# kill -9 never loses a processed message from the file.
OUT = open(os.environ["SINK_OUT"], "a", buffering=1)
DELAY = float(os.environ.get("SINK_DELAY", "0"))

app = faust.App(
    os.environ["SINK_APP_ID"],
    datadir=os.environ["SINK_DATADIR"],
    **faust_settings(os.environ["SINK_BROKER"]),
)
topic = app.topic(
    os.environ["SINK_TOPIC"],
    partitions=int(os.environ.get("SINK_PARTITIONS", "4")),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
EVENTS.write(f"imported {IMPORTED_AT}\n")


@app.on_partitions_assigned.connect
async def _assigned(sender, assigned, **kwargs):
    EVENTS.write(f"assigned {time.time()} {len(assigned)}\n")


@app.agent(topic)
async def sink(stream):
    first = True
    async for value in stream:
        if first:
            EVENTS.write(f"first_message {time.time()}\n")
            first = False
        OUT.write(value.decode() + "\n")
        if DELAY:
            await asyncio.sleep(DELAY)
