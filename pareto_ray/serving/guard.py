"""The ingress's first line, before any route (ASGI middleware, no Ray).

In order, for every HTTP request:

1. header limits: more than ``max_headers`` fields or ``max_header_bytes`` in
   names and values → 431;
2. the bearer token (when auth is on; ``PUBLIC_PATHS`` stay open) → 401;
3. a body-carrying method needs ``Content-Length`` (411) within
   ``max_body_bytes`` (413);
4. the body is read here, whole, under the ``body_timeout_s`` deadline → 408
   (``Connection: close``); the route then gets it replayed.

So a client that sends its headers and then trickles (or never sends) its body
holds one slot of the ingress for at most ``body_timeout_s`` and never reaches
the model deployment's queue.  A WebSocket handshake is refused (this API has
none).  Every refusal is the API's JSON error body.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse

from pareto_ray.serving.explorer import PAGE_PATHS
from pareto_ray.serving.schemas import TOKEN_ENV, ServeSettings, error_body

#: Paths open without the bearer token (health checks, the API's own documentation, the explorer page: it holds
#: nothing of the model and asks for the token itself).
PUBLIC_PATHS = ("/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc") + PAGE_PATHS
BODY_METHODS = ("POST", "PUT", "PATCH")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class TokenError(RuntimeError):
    """Auth was asked for but the replica has no usable token; fails the replica's start."""


def read_token(token_file: str | None = None, required: bool = False,
               env: Mapping[str, str] | None = None) -> str | None:
    """The API token, read by the replica itself: from ``token_file``, else ``$PARETO_RAY_API_TOKEN``.

    The token never travels through Ray (no runtime_env, no init argument): Ray logs runtime envs in plain
    text.  ``required`` (the builder saw a token) turns a missing one into a ``TokenError``, so auth is never
    silently off.  None: auth off.
    """
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise TokenError(f"cannot read the API token file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise TokenError(f"the API token file {token_file} is empty")
        return token
    token = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    if required and not token:
        raise TokenError(f"auth is on ({TOKEN_ENV} was set where the app was built) but this replica's environment "
                         f"has no {TOKEN_ENV}: set it in the environment of the Ray nodes, or pass token_file")
    return token or None


@dataclass(frozen=True)
class GuardConfig:
    settings: ServeSettings
    token: str | None


def error_response(status: int, field: str, message: str, expected: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(field, message, expected), status, dict(headers or {}))


class BodyTimeout(Exception):
    def __init__(self, received: int):
        self.received = received


class ClientGone(Exception):
    pass


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The whole request body within ``timeout`` seconds: ``BodyTimeout`` past it, ``ClientGone`` on a disconnect,
    ``OverflowError`` beyond ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise OverflowError
            chunks.append(chunk)
            if not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise BodyTimeout(size) from None
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app, then waits on the client (disconnects)."""
    sent = False

    async def receive_again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


class Guard:
    """ASGI middleware: header limits, auth, body limits and the body deadline (see the module docstring).

    ``config`` returns the replica's current settings and token; it is called once per request, so a
    reconfigured replica applies new limits at once.
    """

    def __init__(self, app: Any, config: Callable[[], GuardConfig]):
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # no WebSocket endpoint: the handshake gets 403
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cfg = self.config()
        response = self.refuse(scope, cfg)
        if response is None and scope["method"] in BODY_METHODS:
            s = cfg.settings
            try:
                body = await read_body(receive, s.max_body_bytes, s.body_timeout_s)
            except ClientGone:
                return
            except BodyTimeout as exc:
                response = error_response(
                    408, "body", f"the body did not arrive within {s.body_timeout_s:g} s ({exc.received} bytes "
                                 f"of {_header(scope, b'content-length')} received)",
                    f"the whole body within {s.body_timeout_s:g} s", {"Connection": "close"})
            except OverflowError:
                response = error_response(413, "body", f"the body exceeds the limit of {s.max_body_bytes} bytes",
                                          f"a JSON body of at most {s.max_body_bytes} bytes", {"Connection": "close"})
            else:
                receive = replay(body, receive)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def refuse(scope: Scope, cfg: GuardConfig) -> JSONResponse | None:
        """The error for a request refused on its headers alone, or None."""
        s = cfg.settings
        raw = scope["headers"]
        size = sum(len(k) + len(v) for k, v in raw)
        if len(raw) > s.max_headers or size > s.max_header_bytes:
            return error_response(431, "headers", f"{len(raw)} header fields, {size} bytes",
                                  f"at most {s.max_headers} header fields and {s.max_header_bytes} bytes of them",
                                  {"Connection": "close"})
        if cfg.token and not scope["path"].rstrip("/").endswith(PUBLIC_PATHS):  # the path may carry a route prefix
            sent = _header(scope, b"authorization") or ""
            if not hmac.compare_digest(sent.encode("latin-1"), f"Bearer {cfg.token}".encode()):
                return error_response(401, "Authorization", "missing or wrong bearer token",
                                      "Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        if scope["method"] in BODY_METHODS:
            limit = s.max_body_bytes
            length = _header(scope, b"content-length")
            if length is None or not length.isdigit():
                return error_response(411, "Content-Length", "request bodies must state their length",
                                      "a Content-Length header")
            if int(length) > limit:
                return error_response(413, "body", f"{int(length)} bytes exceed the limit of {limit}",
                                      f"a JSON body of at most {limit} bytes (fewer inputs per request)",
                                      {"Connection": "close"})
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
