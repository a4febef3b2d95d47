"""Trust bundles and the serving SVID from the SPIFFE Workload API (py-spiffe `X509Source`).

py-spiffe's `X509Source` streams X.509 contexts and retries a dropped connection by
itself, but a non-retryable error (INVALID_ARGUMENT, an unparsable response) closes it
for good and nothing tells its subscribers. `WorkloadApiSource` supervises it: it polls
`is_closed()`, recreates the source with capped exponential backoff (with jitter, so that
the replicas on one node do not reconnect in step), and meanwhile keeps the last good
bundles and SVID (an agent restart must not take the server down).

Each update is the full state (docs/concepts/identity.md#trust-bundles): the default SVID's own
bundle plus every federated bundle; a trust domain missing from it is no longer trusted. A federated
bundle with no certificates distrusts that domain (py-spiffe would reject the empty bytes and
close the source, keeping the old trust in force: `_Client` maps them to an empty bundle).

A bundle CA that cannot sign certificates is logged as a warning (`authorities`), once
per distinct problem rather than on every update, and kept.

Given `on_jwt_update`, it also runs a `workload_api_jwt.JwtBundleWatcher` beside the
X509Source (its own stream and client, so that either can fail and recover alone): the
JWT-SVID keys of a SPIRE-only deployment come from the agent too.

What an update is for is the caller's business: `on_update` gets the bundles and the
serving SVID as plain values (the caller serves with the SVID and counts updates),
`on_restart` hears of every failed source that is recreated.

py-spiffe calls back on its own threads; updates reach the event loop through
`call_soon_threadsafe`. The blocking constructor runs on a daemon thread so that a
shutdown never waits for a Workload API that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.hashes import SHA256
from spiffe import WorkloadApiClient, X509Source
from spiffe.bundle.x509_bundle.x509_bundle import X509Bundle
from spiffe.bundle.x509_bundle.x509_bundle_set import X509BundleSet
from spiffe.spiffe_id.spiffe_id import TrustDomain

from authz_server.core.backoff import backoff_delay, sleep_unless
from authz_server.core.errors import ConfigError, quote
from authz_server.identity.authorities import authority_warnings
from authz_server.identity.bundles import check_trust_domain
from authz_server.identity.workload_api_jwt import JwtBundles, JwtBundleWatcher

__all__ = ["Svid", "WorkloadApiSource", "X509Update"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_SHA256 = SHA256()


@dataclass(frozen=True, slots=True)
class Svid:
    """The default X509-SVID: its private key and its certificate chain, leaf first."""

    private_key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    spiffe_id: str


@dataclass(frozen=True, slots=True)
class X509Update:
    """One X.509 context: the default SVID and every bundle, by trust domain."""

    svid: Svid
    bundles: Mapping[str, tuple[x509.Certificate, ...]]


class _Client(WorkloadApiClient):
    """Reads an empty federated bundle as "no authorities" instead of failing the stream."""

    @staticmethod
    def _create_x509_bundle_set(resp_bundles: Mapping[str, bytes]) -> Any:
        bundles = [
            X509Bundle(TrustDomain(td), set())
            if not data
            else X509Bundle.parse_raw(TrustDomain(td), data)
            for td, data in resp_bundles.items()
        ]
        return X509BundleSet.of(bundles)


def update_from_context(context: Any) -> X509Update:
    """Convert a py-spiffe `X509Context` (default SVID + bundle set) to plain values."""
    svid = context.default_svid
    bundles: dict[str, tuple[x509.Certificate, ...]] = {}
    for bundle in context.x509_bundle_set.bundles:
        name = str(bundle.trust_domain.name)
        try:
            check_trust_domain(name, "Workload API bundle")
        except ConfigError as exc:
            log.warning("ignoring a Workload API bundle: %s", exc)
            continue
        bundles[name] = tuple(sorted(bundle.x509_authorities, key=lambda c: c.fingerprint(_SHA256)))
    return X509Update(Svid(svid.private_key, tuple(svid.cert_chain), str(svid.spiffe_id)), bundles)


class WorkloadApiSource:
    """Keeps an `X509Source` alive and hands every update to `on_update` on the loop;
    `on_restart` is called each time a failed source is recreated."""

    def __init__(
        self,
        socket: str,
        on_update: Callable[[X509Update], Awaitable[None]],
        *,
        on_restart: Callable[[], None] | None = None,
        connect_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        poll_interval: float = 0.25,
        on_jwt_update: Callable[[JwtBundles], Awaitable[None]] | None = None,
    ) -> None:
        self.socket = socket
        self.jwt = (
            JwtBundleWatcher(socket, on_jwt_update, backoff=backoff)
            if on_jwt_update is not None
            else None
        )
        self._on_update = on_update
        self._on_restart = on_restart
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._poll = poll_interval
        self._stopping = asyncio.Event()
        self.last_error: str | None = None
        self.updates = 0
        self.restarts = 0
        self._source: Any = None
        self._client: Any = None
        self._warned: frozenset[tuple[str, str]] = frozenset()

    async def run(self) -> None:
        """Create, watch and recreate the source (and the JWT stream) until `close()`."""
        if self.jwt is None:
            await self._run_x509()
            return
        jwt = asyncio.get_running_loop().create_task(self.jwt.run(), name="workload-api-jwt")
        try:
            await self._run_x509()
        finally:
            self.jwt.close()
            jwt.cancel()
            await asyncio.wait({jwt})

    async def _run_x509(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[X509Update] = asyncio.Queue()
        failures = 0
        while not self._stopping.is_set():
            try:
                source = await _on_daemon_thread(self._create)
            except Exception as exc:
                self.last_error = f"cannot connect: {exc}"
                log.warning("Workload API %s: %s", self.socket, self.last_error)
                failures += 1
                await sleep_unless(self._stopping, backoff_delay(failures, *self._backoff))
                continue
            failures = 0

            def push(source: Any = source) -> None:
                # On py-spiffe's watcher thread: convert there, deliver on the loop.
                try:
                    update = update_from_context(source.get_x509_context())
                except Exception as exc:
                    log.error("Workload API update unusable, keeping the last one: %s", exc)
                    return
                with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                    loop.call_soon_threadsafe(queue.put_nowait, update)

            source.subscribe_for_updates(push)
            push()  # the update the constructor waited for
            while not self._stopping.is_set() and not source.is_closed():
                with contextlib.suppress(TimeoutError):
                    update = await asyncio.wait_for(queue.get(), self._poll)
                    await self._deliver(update)
            while not queue.empty():
                await self._deliver(queue.get_nowait())
            self._close_source()
            if not self._stopping.is_set():
                self.restarts += 1
                self.last_error = "the X509Source failed; recreating it"
                if self._on_restart is not None:
                    self._on_restart()
                log.error("Workload API %s: source closed after an error; recreating", self.socket)
                failures += 1
                await sleep_unless(self._stopping, backoff_delay(failures, *self._backoff))

    async def _deliver(self, update: X509Update) -> None:
        self.updates += 1
        self.last_error = None
        self._warn_unusable(update)
        try:
            await self._on_update(update)
        except Exception as exc:  # a bad update must not end the watch
            log.error("Workload API update not applied, keeping the last one: %s", exc)

    def _warn_unusable(self, update: X509Update) -> None:
        """Log each CA that cannot sign, when it first appears (updates repeat the set)."""
        warnings = frozenset(
            (td, line)
            for td, authorities in update.bundles.items()
            for line in authority_warnings(authorities)
        )
        for td, line in sorted(warnings - self._warned):
            log.warning("Workload API %s: trust domain %s: %s", self.socket, quote(td), line)
        self._warned = warnings

    def _create(self) -> Any:
        client = _Client(self.socket)
        try:
            source = X509Source(
                workload_api_client=client, timeout_in_seconds=self._connect_timeout
            )
        except Exception:
            client.close()
            raise
        if self._stopping.is_set():  # closed while we were connecting
            source.close()
            client.close()
            raise RuntimeError("closed")
        self._source, self._client = source, client
        return source

    def _close_source(self) -> None:
        source, client, self._source, self._client = self._source, self._client, None, None
        for resource in (source, client):
            if resource is not None:
                with contextlib.suppress(Exception):
                    resource.close()

    def close(self) -> None:
        """Stop watching; `run()` returns soon after."""
        self._stopping.set()
        self._close_source()
        if self.jwt is not None:
            self.jwt.close()


async def _on_daemon_thread(function: Callable[[], _T]) -> _T:
    """Run a blocking call on a daemon thread (never joined at interpreter exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            outcome: tuple[_T | None, BaseException | None] = (function(), None)
        except BaseException as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="workload-api-connect", daemon=True).start()
    return await future
