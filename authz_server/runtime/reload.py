"""The policy and trust bundles in force, and how they are replaced (docs/operations/reload.md).

`LiveState` owns what the Check path reads: it composes the policy, the file bundles and
the Workload API bundles (X.509 and JWT) into one `Snapshot` and swaps it into the
`SnapshotHolder` whole.
`service.py` reads `holder.snapshot` once per Check, so a Check that started on one
version finishes on it, whatever is swapped in meanwhile.

`Reloader` re-reads watched files when they change, and on SIGHUP. It **polls** (every
`--reload-interval`, 1 s by default) a cheap fingerprint of each input instead of using
inotify, because polling is what works everywhere the server runs:
- a Kubernetes ConfigMap or Secret volume is updated by swapping the `..data` symlink
  atomically; inotify watches on the files see nothing (the files never change, a link
  above them does), whereas the fingerprint includes the `..data` link target and the
  inode of every file reached through it;
- editors save by writing a new file and renaming it over the old one (a new inode);
- inotify does not exist on macOS, and misses changes on NFS and some overlay mounts;
- it needs no extra dependency, and a few `stat` calls a second cost nothing.

A fingerprint is (inode, device, mtime, ctime, size) of each file (following symlinks),
the resolved path of a file, and the `..data` target of a directory. A change triggers a
load; a file that changes while being read is retried on the next tick, so a half-written
file is not reported as an error. Invalid input (`PolicyError`, `ConfigError`) keeps the
last good version in force: the failure is logged with every error, counted in
`authz_reloads_total{result="error"}` and kept in `LiveState.failures` (shown by
`/readyz` and the admin GetPolicy) until that source next loads successfully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from cryptography import x509

from authz_server.check.snapshot import Snapshot, SnapshotHolder
from authz_server.core.errors import AuthzError, PolicyError
from authz_server.identity.bundle_json import JwtAuthority
from authz_server.identity.bundles import DomainBundle, TrustBundles
from authz_server.policy.model import Policy
from authz_server.telemetry.metrics import Metrics

__all__ = [
    "LiveState",
    "ReloadFailure",
    "Reloader",
    "Watch",
    "compose_bundles",
    "fingerprint",
    "readiness_problem",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Authorities = tuple[x509.Certificate, ...]
JwtBundles = Mapping[str, Mapping[str, JwtAuthority]]


@dataclass(frozen=True, slots=True)
class ReloadFailure:
    """The last failed reload of one source, with every error."""

    source: str
    at: datetime
    errors: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "at": self.at.isoformat(), "errors": list(self.errors)}


def readiness_problem(
    policy: Policy, bundles: TrustBundles, *, needs_bundles: bool = False, waiting: bool = False
) -> str | None:
    """Why no Check may be decided yet, or None.

    Bundles are needed when the policy requires certificates or a Workload API is
    configured; then at least one of the policy's trust domains must have an authority.
    A domain that lost its bundle only fails its own callers (they get
    `certificate_invalid`): distrusting a partner must not take the whole server down.
    """
    if waiting:
        return "waiting for the first Workload API update (SVID and bundles)"
    if not (needs_bundles or policy.identity.require_certificate):
        return None
    domains = policy.identity.trust_domains
    if domains and not any(bundles.store_for(td) is not None for td in domains):
        return f"no trust bundle for any trust domain of the policy ({', '.join(sorted(domains))})"
    return None


def compose_bundles(
    files: Mapping[str, DomainBundle],
    workload: Mapping[str, tuple[x509.Certificate, ...]] | None,
    workload_jwt: JwtBundles | None = None,
) -> TrustBundles:
    """One `TrustBundles` from both sources; a `--trust-bundle` file wins over the
    Workload API for its trust domain (the operator named it explicitly), X.509 and JWT
    keys alike: a PEM file, which holds no JWT keys, leaves that domain without any."""
    authorities = dict(workload or {})
    jwt = dict(workload_jwt or {})
    for trust_domain, bundle in files.items():
        authorities[trust_domain] = bundle.x509_authorities
        jwt[trust_domain] = bundle.jwt_authorities
    return TrustBundles(authorities, {td: keys for td, keys in jwt.items() if keys})


class LiveState:
    """Policy and bundles in force; every change publishes a new `Snapshot`."""

    def __init__(
        self,
        holder: SnapshotHolder,
        policy: Policy,
        file_bundles: Mapping[str, DomainBundle],
        *,
        workload_api: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.holder = holder
        self.metrics = metrics or Metrics()
        self.policy = policy
        self.policy_loaded_at = datetime.now(UTC)
        self.file_bundles: Mapping[str, DomainBundle] = dict(file_bundles)
        self.workload_bundles: Mapping[str, tuple[x509.Certificate, ...]] | None = None
        self.workload_jwt_bundles: JwtBundles | None = None
        self._workload_api = workload_api
        self.failures: dict[str, ReloadFailure] = {}
        #: Called with the new bundles after each publish (TLS client CAs follow them).
        self.bundle_listeners: list[Callable[[TrustBundles], None]] = []
        #: Awaited after each publish (the server updates gRPC health).
        self.on_change: Callable[[], Awaitable[None]] | None = None
        self.bundles = TrustBundles.empty()
        self.problem: str | None = None
        self._overlap: frozenset[str] = frozenset()
        self._missing: list[str] = []
        self._publish()
        self.metrics.set_policy(
            policy.version, len(policy.rules), self.policy_loaded_at.timestamp()
        )

    @property
    def ready(self) -> bool:
        return self.problem is None

    @property
    def last_reload_error(self) -> ReloadFailure | None:
        """The most recent failure still outstanding (for the admin GetPolicy)."""
        return max(self.failures.values(), key=lambda f: f.at, default=None)

    async def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.policy_loaded_at = datetime.now(UTC)
        self.metrics.set_policy(
            policy.version, len(policy.rules), self.policy_loaded_at.timestamp()
        )
        await self._changed()

    async def set_file_bundles(self, bundles: Mapping[str, DomainBundle]) -> None:
        self.file_bundles = dict(bundles)
        await self._changed()

    async def set_workload_bundles(
        self, bundles: Mapping[str, tuple[x509.Certificate, ...]]
    ) -> None:
        self.workload_bundles = dict(bundles)
        await self._changed()

    async def set_workload_jwt_bundles(self, bundles: JwtBundles) -> None:
        """The full set of JWT bundles from the Workload API (each update replaces it)."""
        self.workload_jwt_bundles = dict(bundles)
        await self._changed()

    def record_failure(self, source: str, errors: Sequence[str]) -> None:
        self.failures[source] = ReloadFailure(source, datetime.now(UTC), tuple(errors))

    def clear_failure(self, source: str) -> None:
        self.failures.pop(source, None)

    async def _changed(self) -> None:
        self._publish()
        if self.on_change is not None:
            await self.on_change()

    def _publish(self) -> None:
        files, workload = self.file_bundles, self.workload_bundles
        workload_jwt = self.workload_jwt_bundles
        overlap = frozenset(files) & (frozenset(workload or {}) | frozenset(workload_jwt or {}))
        if overlap != self._overlap and overlap:
            log.warning(
                "trust domain(s) %s have both a --trust-bundle file and a Workload API "
                "bundle: the file is used",
                ", ".join(sorted(overlap)),
            )
        self._overlap = overlap
        bundles = compose_bundles(files, workload, workload_jwt)
        waiting = self._workload_api and workload is None
        problem = readiness_problem(
            self.policy, bundles, needs_bundles=self._workload_api, waiting=waiting
        )
        # The one write the Check path sees: policy and bundles swapped together.
        self.holder.snapshot = Snapshot(self.policy, bundles) if problem is None else None
        self.bundles, self.problem = bundles, problem
        missing = sorted(
            td for td in self.policy.identity.trust_domains if not bundles.store_for(td)
        )
        verifying = self.policy.identity.require_certificate or bool(bundles.domains)
        if missing != self._missing and missing and problem is None and verifying:
            log.warning("no usable trust bundle for %s: its callers are denied", ", ".join(missing))
        self._missing = missing
        self.metrics.ready.set(1 if problem is None else 0)
        self.metrics.set_trust_domains(
            len(bundles.usable_domains - bundles.unusable_domains),
            len(bundles.domains - bundles.usable_domains),
            len(bundles.unusable_domains),
        )
        for listener in self.bundle_listeners:
            listener(bundles)

    def detail(self) -> dict[str, Any]:
        """What /readyz shows beside its checks."""
        failure = self.last_reload_error
        return {
            "policy": {
                "version": self.policy.version,
                "rules": len(self.policy.rules),
                "loaded_at": self.policy_loaded_at.isoformat(),
            },
            "trust_domains": {
                "trusted": sorted(self.bundles.usable_domains),
                "distrusted": sorted(self.bundles.domains - self.bundles.usable_domains),
            },
            "last_reload_error": failure.as_dict() if failure else None,
            "reload_errors": [f.as_dict() for f in self.failures.values()],
        }


def fingerprint(path: str) -> tuple[object, ...]:
    """Cheap identity of a file or policy directory's current content; never raises."""
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except OSError as exc:
        return (("missing", exc.errno),)
    if not stat.S_ISDIR(mode):
        return (_stat_key(target), os.path.realpath(target))
    parts: list[object] = []
    with contextlib.suppress(OSError):
        parts.append(("..data", os.readlink(target / "..data")))
    try:
        names = sorted(os.listdir(target))
    except OSError as exc:
        return (("unlistable", exc.errno),)
    for name in names:
        if not name.startswith(".") and name.endswith((".yaml", ".yml")):
            parts.append((name, _stat_key(target / name)))
    return tuple(parts)


def _stat_key(path: Path) -> tuple[object, ...]:
    try:
        st = path.stat()
    except OSError as exc:
        return ("missing", exc.errno)
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


@dataclass
class Watch(Generic[_T]):
    """One reloadable input: files to fingerprint, a blocking `load`, an async `apply`
    that returns False when the loaded value equals the one in force."""

    source: str
    paths: tuple[str, ...]
    load: Callable[[], _T]
    apply: Callable[[_T], Awaitable[bool]]
    seen: tuple[object, ...] = field(default=())

    def current(self) -> tuple[object, ...]:
        return tuple(fingerprint(p) for p in self.paths)


class Reloader:
    """Polls the watches and reloads what changed; `trigger()` reloads everything."""

    def __init__(
        self, state: LiveState, watches: Sequence[Watch[Any]], *, interval: float = 1.0
    ) -> None:
        self.state = state
        self.watches = list(watches)
        self.interval = interval
        self._lock = asyncio.Lock()
        self._forced: asyncio.Task[None] | None = None

    def mark_loaded(self, fingerprints: Mapping[str, tuple[object, ...]]) -> None:
        """Record the fingerprints taken before the initial loads."""
        for watch in self.watches:
            watch.seen = fingerprints.get(watch.source, watch.seen)

    async def run(self) -> None:
        """Poll until cancelled (interval 0: never; SIGHUP still reloads)."""
        if self.interval <= 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            await self.check(force=False)

    def trigger(self) -> None:
        """SIGHUP: re-read every input now, changed or not."""
        if self._forced is None or self._forced.done():
            self._forced = asyncio.get_running_loop().create_task(self.check(force=True))

    async def check(self, *, force: bool) -> None:
        async with self._lock:
            for watch in self.watches:
                await self._check_one(watch, force)

    async def _check_one(self, watch: Watch[Any], force: bool) -> None:
        before = watch.current()
        if before == watch.seen and not force:
            return
        errors: list[str] = []
        value: Any = None
        try:
            value = await asyncio.to_thread(watch.load)
        except PolicyError as exc:
            errors = [str(issue) for issue in exc.issues] or [str(exc)]
        except AuthzError as exc:
            errors = [str(exc)]
        except Exception as exc:  # an unexpected loader bug must not stop reloading
            log.exception("reloading %s failed unexpectedly", watch.source)
            errors = [f"{type(exc).__name__}: {exc}"]
        if watch.current() != before:
            return  # changed while we read it: a half-written file; try again next tick
        watch.seen = before
        metrics = self.state.metrics
        if errors:
            self.state.record_failure(watch.source, errors)
            metrics.reload(watch.source, "error")
            log.error(
                "reload of %s rejected, keeping the last good version (%d error(s)):\n  %s",
                watch.source,
                len(errors),
                "\n  ".join(errors),
            )
            return
        self.state.clear_failure(watch.source)
        changed = await watch.apply(value)
        metrics.reload(watch.source, "ok" if changed else "unchanged")
        if changed:
            log.info("reloaded %s", watch.source)
