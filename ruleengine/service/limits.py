"""Request limits as ASGI middleware and the problem+json response shape.

The body of every request is read here, before the application sees it, within a size bound
(413) and a time bound (408: a client that trickles its body is cut off); the application then
reads the buffered body. Errors are RFC 9457 ``application/problem+json`` objects.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

PROBLEM = "application/problem+json"


def problem_body(status: int, title: str, detail: str, code: str, **extra: Any) -> bytes:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    body.update({k: v for k, v in extra.items() if v is not None})
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


async def _send_problem(send: Any, status: int, title: str, detail: str, code: str) -> None:
    body = problem_body(status, title, detail, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Buffer the request body up to ``max_bytes`` within ``timeout_s`` seconds, or answer 413/408."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    await _send_problem(send, 400, "Bad Request", "Content-Length is not a number", "bad-length")
                    return
        if length is not None and length > self.max_bytes:
            await _send_problem(
                send,
                413,
                "Content Too Large",
                f"the body has {length:,} bytes; this service accepts at most {self.max_bytes:,}",
                "body-too-large",
            )
            return
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.timeout_s
        more = True
        disconnected = False
        while more:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                msg = await asyncio.wait_for(receive(), timeout=left)
            except TimeoutError:
                await _send_problem(
                    send,
                    408,
                    "Request Timeout",
                    f"the body did not arrive within {self.timeout_s:g} s (slow client)",
                    "body-timeout",
                )
                return
            if msg["type"] == "http.disconnect":
                disconnected = True
                break
            part = msg.get("body", b"")
            size += len(part)
            if size > self.max_bytes:
                await _send_problem(
                    send,
                    413,
                    "Content Too Large",
                    f"the body is larger than {self.max_bytes:,} bytes, the most this service accepts",
                    "body-too-large",
                )
                return
            chunks.append(part)
            more = msg.get("more_body", False)
        if disconnected:
            return
        body = b"".join(chunks)
        sent = False
        started = time.perf_counter()

        async def timed_send(msg: Any) -> None:
            if msg["type"] == "http.response.start":  # the server-side time, for clients and benchmarks
                ms = (time.perf_counter() - started) * 1000
                msg = {**msg, "headers": [*msg.get("headers", []), (b"server-timing", b"app;dur=%.3f" % ms)]}
            await send(msg)

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, timed_send)
