"""Whether a Kafka broker answers at the bootstrap servers, asked before a command starts its clients.

Started against no broker, the relay retried for ever with a traceback-sized warning every few
seconds, and a faust worker printed a 30-line traceback: the operator is better served by one line
naming what could not be reached and what to set.
"""

from __future__ import annotations

import asyncio
import logging
import os


class BrokerUnreachable(Exception):
    """No bootstrap server answered a metadata request; str() says which were tried and why."""


def require_broker(bootstrap_servers: str, timeout: float = 10.0) -> None:
    """Return once one of the servers answers as a Kafka broker; BrokerUnreachable otherwise."""
    quiet = logging.getLogger("aiokafka")
    level, quiet.level = quiet.level, logging.CRITICAL  # its per-host errors: the one line says it all
    try:
        asyncio.run(_ask_metadata(bootstrap_servers, timeout))
    finally:
        quiet.level = level


async def _ask_metadata(bootstrap_servers: str, timeout: float) -> None:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
    except (KafkaError, OSError, asyncio.TimeoutError):
        reasons = await asyncio.gather(*(_connect_error(server, timeout) for server in bootstrap_servers.split(",")))
        why = "; ".join(r for r in reasons if r) or "it does not answer as a Kafka broker"
        raise BrokerUnreachable(f"no Kafka broker reachable at {bootstrap_servers} ({why})") from None
    finally:
        await client.close()


async def _connect_error(server: str, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails, or None when it opens."""
    host, _, port = server.strip().rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
    except asyncio.TimeoutError:
        return f"{server}: no answer within {timeout:.0f}s"
    except OSError as e:
        # asyncio words a refused connection "Connect call failed (...)"; the errno says it plainly
        reason = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
        return f"{server}: {reason.lower()}"
    writer.close()
    return None
