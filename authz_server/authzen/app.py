"""The aiohttp application: routes, limits and headers around `handlers.AuthzenHandler`.

One catch-all route dispatches on the raw path, so that every answer, 404 and 405
included, is a JSON object. Limits, each answered before any decision is made:

    X-Request-ID   1 to 256 printable ASCII characters, echoed on every response  400
    body size      `max_body_bytes` (Content-Length, or counted while reading)     413
    read time      the whole body within `read_timeout_s` (slow senders)          408

Anything unexpected is a 500 with a JSON body, logged with its traceback; the process and
the Check path carry on. Decisions are `Cache-Control: no-store`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from authz_server.authzen.caller import PeerCertificate
from authz_server.authzen.handlers import AuthzenHandler, Reply, error_reply
from authz_server.authzen.wellknown import (
    CONFIGURATION_PATH,
    EVALUATION_PATH,
    EVALUATIONS_PATH,
    configuration,
    request_base_url,
)

__all__ = ["REQUEST_ID", "Limits", "create_app"]

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-ID"
_MAX_REQUEST_ID = 256
_CHUNK = 64 * 1024

Endpoint = Callable[[bytes, str | None, PeerCertificate | None, str], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Limits:
    #: A batch of the maximum 100 evaluations with generous contexts fits.
    max_body_bytes: int = 1024 * 1024
    read_timeout_s: float = 10.0


def create_app(
    handler: AuthzenHandler,
    *,
    secure: bool,
    public_url: str | None = None,
    limits: Limits | None = None,
) -> web.Application:
    """The application for one listener; `secure` says whether it is served over TLS."""
    limits = limits or Limits()
    endpoints: dict[str, Endpoint] = {
        EVALUATION_PATH: handler.evaluation,
        EVALUATIONS_PATH: handler.evaluations,
    }

    async def route(request: web.Request, request_id: str) -> Reply:
        path = request.rel_url.raw_path
        if path == CONFIGURATION_PATH:
            if request.method not in ("GET", "HEAD"):
                return error_reply(405, f"{path} answers GET", Allow="GET, HEAD")
            base = public_url or request_base_url(secure, request.headers.get("Host"))
            if base is None:
                return error_reply(400, "the Host header is not a host name")
            return Reply(200, configuration(base), {"Cache-Control": "max-age=300"})
        endpoint = endpoints.get(path)
        if endpoint is None:
            return error_reply(404, f"no AuthZEN endpoint at {path[:100]!r}")
        if request.method != "POST":
            return error_reply(405, f"{path} answers POST", Allow="POST")
        body = await _read_body(request, limits)
        if isinstance(body, Reply):
            return body
        content_types = request.headers.getall("Content-Type", [])
        content_type = ",".join(content_types) if content_types else None
        peer = PeerCertificate.from_ssl(
            request.transport.get_extra_info("ssl_object") if request.transport else None
        )
        reply = await endpoint(body, content_type, peer, request_id)
        reply.headers.setdefault("Cache-Control", "no-store")
        return reply

    async def dispatch(request: web.Request) -> web.Response:
        request_id = request.headers.get(REQUEST_ID)
        echo: dict[str, str] = {}
        if request_id is not None:
            if not _valid_request_id(request_id):
                return _response(
                    error_reply(
                        400,
                        f"{REQUEST_ID} must be 1 to {_MAX_REQUEST_ID} printable ASCII characters",
                    ),
                    echo,
                )
            echo[REQUEST_ID] = request_id
        try:
            reply = await route(request, request_id or "")
        except Exception:
            log.exception("AuthZEN request %s %s failed", request.method, request.path[:100])
            reply = error_reply(500, "internal error (logged)")
        return _response(reply, echo)

    app = web.Application(client_max_size=limits.max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def _read_body(request: web.Request, limits: Limits) -> bytes | Reply:
    too_large = error_reply(413, f"request body larger than {limits.max_body_bytes} bytes")
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        return too_large
    data = bytearray()
    try:
        async with asyncio.timeout(limits.read_timeout_s):
            while chunk := await request.content.read(_CHUNK):
                data += chunk
                if len(data) > limits.max_body_bytes:
                    return too_large
    except TimeoutError:
        return error_reply(408, f"request body not received within {limits.read_timeout_s:g} s")
    return bytes(data)


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable()


def _response(reply: Reply, echo: dict[str, str]) -> web.Response:
    body = json.dumps(reply.body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return web.Response(
        body=body,
        status=reply.status,
        content_type="application/json",
        headers={**reply.headers, **echo, "Server": "authz-server"},
    )
