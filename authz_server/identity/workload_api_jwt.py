"""JWT bundles from the SPIFFE Workload API (`FetchJWTBundles`), for the `jwt_svid` source.

A SPIRE-only deployment has no bundle files: the JWT-SVID keys must come from the agent,
like the X.509 bundles (`workload_api`). py-spiffe's `stream_jwt_bundles` keeps one stream
open and reconnects after retryable errors; a non-retryable one (INVALID_ARGUMENT) ends
it. `JwtBundleWatcher` supervises it the same way `WorkloadApiSource` supervises the
X509Source: recreate with capped, jittered backoff, and meanwhile keep the last good keys.

Each update is the full state (docs/concepts/identity.md#trust-bundles): a trust domain missing from
it has no JWT keys any more, and one sent with an empty JWK Set is distrusted. The JWK Sets are
parsed here with the strict `bundle_json.parse_jwt_bundle` (never py-spiffe's lenient PyJWT parser,
which would accept a symmetric `oct` key): `_JwtClient` hands the raw bytes through. An
update with any document that does not parse is rejected whole, keeping the last good one,
as an unusable X.509 update or a broken bundle file is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from spiffe import WorkloadApiClient
from spiffe.spiffe_id.spiffe_id import TrustDomain

from authz_server.core.backoff import backoff_delay, sleep_unless
from authz_server.core.errors import ConfigError
from authz_server.identity.bundle_json import JwtAuthority, parse_jwt_bundle
from authz_server.identity.bundles import check_trust_domain

__all__ = ["JwtBundleWatcher", "JwtBundles", "jwt_bundles_from_response"]

log = logging.getLogger(__name__)

#: JWT authorities by trust domain, then by `kid`.
JwtBundles = Mapping[str, Mapping[str, JwtAuthority]]


class _JwtClient(WorkloadApiClient):
    """Streams the raw JWK Set bytes by trust domain ID, for our own strict parser."""

    def _process_jwt_bundles(self, jwt_bundles_response: Any) -> Any:
        return dict(jwt_bundles_response.bundles)


def jwt_bundles_from_response(raw: Mapping[str, bytes]) -> JwtBundles:
    """Parse one `JWTBundlesResponse.bundles`; `ConfigError` if any document is invalid.

    A trust domain whose name is not valid is left out (so not trusted), as in the X.509
    updates."""
    bundles: dict[str, Mapping[str, JwtAuthority]] = {}
    for td_id, data in raw.items():
        try:
            name = str(TrustDomain(td_id).name)
            check_trust_domain(name, "Workload API JWT bundle")
        except Exception as exc:  # py-spiffe's ArgumentError, or our ConfigError
            log.warning("ignoring a Workload API JWT bundle for %r: %s", td_id, exc)
            continue
        parsed = parse_jwt_bundle(data, f"Workload API JWT bundle of {name}")
        for ignored in parsed.ignored:
            log.warning("Workload API JWT bundle of %s: ignored %s", name, ignored)
        bundles[name] = parsed.jwt_authorities
    return MappingProxyType(bundles)


class JwtBundleWatcher:
    """Keeps a `FetchJWTBundles` stream open; hands every good update to `on_update`."""

    def __init__(
        self,
        socket: str,
        on_update: Callable[[JwtBundles], Awaitable[None]],
        *,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.socket = socket
        self._on_update = on_update
        self._backoff = backoff
        self._stopping = asyncio.Event()
        self.updates = 0
        self.restarts = 0
        self.last_error: str | None = None
        self._client: Any = None
        self._handler: Any = None

    async def run(self) -> None:
        """Open, watch and reopen the stream until `close()`."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[JwtBundles | BaseException] = asyncio.Queue()

        def deliver(item: JwtBundles | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def on_success(raw: Any) -> None:
            # On py-spiffe's watcher thread: parse there, deliver on the loop.
            try:
                deliver(jwt_bundles_from_response(raw))
            except ConfigError as exc:
                log.error("Workload API JWT bundles unusable, keeping the last ones: %s", exc)
                self.last_error = str(exc)

        failures = 0
        while not self._stopping.is_set():
            try:
                self._open(on_success, deliver)
            except Exception as exc:
                self.last_error = f"cannot connect: {exc}"
                log.warning("Workload API %s (JWT bundles): %s", self.socket, self.last_error)
                failures += 1
                await sleep_unless(self._stopping, backoff_delay(failures, *self._backoff))
                continue
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(queue.get(), 0.25)
                    if isinstance(item, BaseException):
                        self.last_error = f"stream failed: {item}"
                        break
                    failures = 0
                    self.updates += 1
                    self.last_error = None
                    try:
                        await self._on_update(item)
                    except Exception:  # a bug must not end the watch
                        log.exception("applying Workload API JWT bundles failed")
            self._close_stream()
            if not self._stopping.is_set():
                self.restarts += 1
                log.error(
                    "Workload API %s: JWT bundle stream ended (%s); reopening",
                    self.socket,
                    self.last_error,
                )
                failures += 1
                await sleep_unless(self._stopping, backoff_delay(failures, *self._backoff))

    def _open(
        self, on_success: Callable[[Any], None], on_error: Callable[[BaseException], None]
    ) -> None:
        client = _JwtClient(self.socket)
        try:
            handler = client.stream_jwt_bundles(on_success, on_error)
        except Exception:
            client.close()
            raise
        self._client, self._handler = client, handler

    def _close_stream(self) -> None:
        handler, client, self._handler, self._client = self._handler, self._client, None, None
        for close in (getattr(handler, "cancel", None), getattr(client, "close", None)):
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def close(self) -> None:
        """Stop watching; `run()` returns soon after."""
        self._stopping.set()
        self._close_stream()
