"""Personal data in answers: a JSON answer that carries sealed values (domain/personal.py: a
reason someone wrote, a username) is sent with them opened, or as "[erased]" once their subject
was erased. One place for every route, so that no reader shows "sealed:v1:..." to people; the
answer is already one the caller may see (its route checked tenant and role)."""

from __future__ import annotations

import json
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.personal import PREFIX

_SEALED = PREFIX.encode()


class RevealSealed:
    """Pure ASGI: JSON bodies (problem+json too) are held until complete and opened when they hold a
    sealed value; other answers (streams, files) pass through untouched."""

    def __init__(self, app: ASGIApp, reveal: Callable[[Any], Any]):
        self.app, self.reveal = app, reveal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def holding_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if not _is_json(message):
                    await send(message)
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_opened(start, b"".join(chunks), send)

        await self.app(scope, receive, holding_send)

    async def _send_opened(self, start: Message, body: bytes, send: Send) -> None:
        if _SEALED in body:  # the keys are read from the database: off the event loop
            body = await run_in_threadpool(self._opened, body)
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            start = {**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        await send(start)
        await send({"type": "http.response.body", "body": body})


    def _opened(self, body: bytes) -> bytes:
        return json.dumps(self.reveal(json.loads(body)), ensure_ascii=False, separators=(",", ":")).encode()


def _is_json(start: Message) -> bool:
    for key, value in start.get("headers", []):
        if key.lower() == b"content-type":
            return value.split(b";")[0].strip().endswith(b"json")
    return False
