"""The API's request guard: read-only (GET and HEAD) and small requests only.

A plain ASGI middleware in front of the routes:

* a method other than GET or HEAD gets 405 with `Allow: GET, HEAD`, whatever the path;
* a request target (path and query string) above `max_target` bytes gets 414;
* a body above `max_body` bytes gets 413: by its Content-Length, or counted as it is
  read when it comes chunked (the routes never read a body, so a small one is dropped);
* HEAD is answered as GET without the body: the route's headers (Content-Length too),
  and the route stops at its first response message, so a HEAD of the event stream ends.

Every refusal has a JSON body `{"error": ..., "detail": ...}` like the API's other errors
(tests/integration/test_security.py: read-only, HEAD, oversized requests).
"""

from __future__ import annotations

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: largest request body accepted (the API reads none)
MAX_BODY_BYTES = 16 * 1024
#: largest path + query string accepted
MAX_TARGET_BYTES = 8 * 1024
ALLOWED = ("GET", "HEAD")


class _HeadSent(Exception):
    """Stops the route once a HEAD's headers are out."""


async def refuse(send: Send, status: int, error: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps({"error": error, "detail": detail})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.encode(), v.encode()) for k, v in (headers or {}).items())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES,
                 max_target: int = MAX_TARGET_BYTES) -> None:
        self.app = app
        self.max_body = max_body
        self.max_target = max_target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in ALLOWED:
            await refuse(send, 405, "method not allowed",
                         "the API is read-only: GET and HEAD only", {"allow": ", ".join(ALLOWED)})
            return
        path = scope.get("raw_path") or scope["path"].encode()
        if len(path) + 1 + len(scope.get("query_string", b"")) > self.max_target:
            await refuse(send, 414, "request target too long",
                         f"path and query string are limited to {self.max_target} bytes")
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit()
                                   or int(length) > self.max_body):
            await refuse(send, 413, "request body too large",
                         f"request bodies are limited to {self.max_body} bytes")
            return
        if length is None and "transfer-encoding" in headers:
            size = 0
            while True:  # read the chunked body, counting, and drop it
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left
                size += len(message.get("body", b""))
                if size > self.max_body:
                    await refuse(send, 413, "request body too large",
                                 f"request bodies are limited to {self.max_body} bytes")
                    return
                if not message.get("more_body", False):
                    break
            receive = _after_body(receive)
        if method == "HEAD":
            await self._head(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = False

        async def headers_only(message: Message) -> None:
            nonlocal sent
            if sent:
                raise _HeadSent
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                sent = True
                raise _HeadSent

        try:
            await self.app({**scope, "method": "GET"}, receive, headers_only)
        except Exception:  # _HeadSent, maybe wrapped in an ExceptionGroup by a task group
            if not sent:
                raise


def _after_body(receive: Receive) -> Receive:
    """A receive whose body was consumed already: an empty body, then the real channel."""
    first = True

    async def replay() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return replay
