"""HTTP `/metrics`, `/healthz` and `/readyz` on `--metrics-listen` (docs/operations/metrics.md).

A small asyncio server on the event loop the Check path runs on, so that `/healthz`
answering proves the loop itself is alive, and readiness checks can read the live state
without locks. It speaks just enough HTTP/1.1 for probes and Prometheus: GET or HEAD, one
request per connection, bounded head size and read time.

- `/healthz` 200 while the process serves requests (also while draining: a liveness
  probe must not kill a pod that is finishing its in-flight Checks).
- `/readyz` 200 or 503 with a JSON body: every readiness check by name (`"ok"` or the
  problem), plus a `detail` object (policy version, last reload error, ...).
- `/metrics` Prometheus text format.

Readiness checks are callables returning None (ready) or a problem string, plain or
awaitable, each bounded by `CHECK_TIMEOUT`; an exception or a timeout is a problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from authz_server.core.errors import ConfigError

__all__ = ["ProbeServer", "ReadinessCheck"]

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], "str | Awaitable[str | None] | None"]

CHECK_TIMEOUT = 2.0
_READ_TIMEOUT = 5.0
_MAX_HEAD = 8192
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class ProbeServer:
    """Serves the three endpoints; `add_check` registers more readiness checks."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        detail: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._registry = registry
        self._detail = detail
        self._checks: dict[str, ReadinessCheck] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """`check()` returns None when ready, else what is wrong (shown in /readyz)."""
        self._checks[name] = check

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the /readyz body)."""
        checks = list(self._checks.items())
        results = await asyncio.gather(*(self._run(check) for _, check in checks))
        shown = {name: problem or "ok" for (name, _), problem in zip(checks, results, strict=True)}
        ready = all(problem is None for problem in results)
        body: dict[str, Any] = {"ready": ready, "checks": shown}
        if self._detail is not None:
            body["detail"] = dict(self._detail())
        return ready, body

    @staticmethod
    async def _run(check: ReadinessCheck) -> str | None:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, CHECK_TIMEOUT)
        except TimeoutError:
            return f"check timed out after {CHECK_TIMEOUT:g}s"
        except Exception as exc:  # a broken check is a not-ready answer, not a crash
            return f"check failed: {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) and result else None

    async def start(self, listen: str) -> int:
        """Bind `HOST:PORT` (port 0 picks one); returns the port."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the documented default
        try:
            self._server = await asyncio.start_server(self._serve, host, int(port))
        except OSError as exc:
            raise ConfigError(
                f"--metrics-listen {listen}: cannot listen: {exc.strerror or exc}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            status, content_type, body, method = await self._respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body, method = 400, "text/plain", b"bad request\n", "GET"
        except Exception:
            log.exception("probe request failed")
            status, content_type, body, method = 503, "text/plain", b"error\n", "GET"
        reason = _REASONS.get(status, "Bad Request")
        headers = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            writer.write(headers + (b"" if method == "HEAD" else body))
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, head: bytes) -> tuple[int, str, bytes, str]:
        if len(head) > _MAX_HEAD:
            return 400, "text/plain", b"request head too large\n", "GET"
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain", b"bad request line\n", "GET"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET or HEAD only\n", "GET"
        if target == "/healthz":
            return 200, "text/plain", b"ok\n", method
        if target == "/readyz":
            ready, body = await self.readiness()
            data = json.dumps(body, indent=2, sort_keys=True, default=str).encode() + b"\n"
            return (200 if ready else 503), "application/json", data, method
        if target == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry), method
        return 404, "text/plain", b"not found: /metrics /healthz /readyz\n", method
