"""Request limits as ASGI middleware and the problem+json response shape.

The body of every request is read here, before the application sees it, within a size bound
(413) and a time bound (408: a client that trickles its body is cut off). It is spooled: held in
memory up to ``spool_bytes`` (1 MiB by default), beyond that in a temporary file of the service's
state folder, so a 32 MiB upload costs 32 MiB of disk, not of memory. The application reads the
spooled body as a stream of 64 KiB pieces, or takes the file itself (:func:`body_file`: uploads
are copied from it to their own file). Errors are RFC 9457 ``application/problem+json`` objects.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import IO, Any

BODY_KEY = "ruleengine.body"  # the scope entry holding the spooled body (a file object at 0)
PIECE = 64 * 1024


def body_file(scope: Any) -> IO[bytes] | None:
    """The request's spooled body, rewound, or None (no BodyLimit in front of the app)."""
    f = scope.get(BODY_KEY)
    if f is not None:
        f.seek(0)
    return f


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


class _Spool(tempfile.SpooledTemporaryFile):
    """A spooled body whose folder is created only when it rolls over to a file."""

    def rollover(self) -> None:
        folder = getattr(self, "_TemporaryFileArgs", {}).get("dir")
        if folder and not self._rolled:  # type: ignore[attr-defined]
            Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
        super().rollover()


class BodyLimit:
    """Buffer the request body up to ``max_bytes`` within ``timeout_s`` seconds, or answer 413/408."""

    def __init__(
        self, app: Any, max_bytes: int, timeout_s: float, spool_bytes: int = 2**20, spool_dir: Path | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.spool_bytes = spool_bytes
        self.spool_dir = spool_dir

    def _spool(self) -> IO[bytes]:
        # the folder is made when a body first outgrows memory (_Spool.rollover), not per request
        return _Spool(  # noqa: SIM115 - closed in __call__'s finally
            max_size=self.spool_bytes, mode="w+b", dir=str(self.spool_dir) if self.spool_dir else None
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()  # the request's arrival: Server-Timing covers receiving the body too
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
        spool = self._spool()
        try:
            if await self._receive_body(receive, send, spool):
                await self._forward(scope, receive, send, spool, started)
        finally:
            spool.close()

    async def _receive_body(self, receive: Any, send: Any, spool: IO[bytes]) -> bool:
        """Spool the body; False when the request was answered (413, 408) or the client left."""
        size = 0
        deadline = time.monotonic() + self.timeout_s
        more = True
        while more:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):  # (no task per receive, unlike wait_for)
                    msg = await receive()
            except TimeoutError:
                await _send_problem(
                    send,
                    408,
                    "Request Timeout",
                    f"the body did not arrive within {self.timeout_s:g} s (slow client)",
                    "body-timeout",
                )
                return False
            if msg["type"] == "http.disconnect":
                return False
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
                return False
            if part:
                spool.write(part)
            more = msg.get("more_body", False)
        spool.seek(0)
        return True

    async def _forward(self, scope: Any, receive: Any, send: Any, spool: IO[bytes], started: float) -> None:

        async def timed_send(msg: Any) -> None:
            if msg["type"] == "http.response.start":  # the server-side time, for clients and benchmarks
                ms = (time.perf_counter() - started) * 1000
                msg = {**msg, "headers": [*msg.get("headers", []), (b"server-timing", b"app;dur=%.3f" % ms)]}
            await send(msg)

        pos = 0
        done = False

        async def replay() -> Any:
            nonlocal pos, done
            if done:
                return await receive()
            spool.seek(pos)
            piece = spool.read(PIECE)
            pos += len(piece)
            more = len(piece) == PIECE and spool.read(1) != b""
            done = not more
            return {"type": "http.request", "body": piece, "more_body": more}

        await self.app({**scope, BODY_KEY: spool}, replay, timed_send)
