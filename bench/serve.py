"""Run authz-server or the do-nothing server as a benchmark process that reports counts.

    python -m bench.serve authz --policy P --trust-bundle TD=PEM --listen ADDR --stats FILE
    python -m bench.serve noop --listen ADDR --stats FILE

`authz` is `server.start_server`, exactly what `authz-server serve` runs, with the
`CertificateVerifier` passed in so that its cache counters can be read. The only
addition is a side channel that is idle while requests are measured: the stats file
(JSON: port, decision count, certificate cache, audit records) is written once when the
server is ready and again on every SIGUSR1. SIGTERM drains and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from authz_server.check.pipeline import Pipeline
from authz_server.identity.bundles import parse_bundle_spec
from authz_server.identity.x509 import CertificateVerifier
from authz_server.runtime.settings import Settings
from authz_server.state.memory import MemoryStore
from bench.noop_server import start_noop_server

__all__ = ["main"]


def _write_stats(path: Path, stats: dict[str, Any]) -> None:
    # Write then rename: the driver never reads half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats), encoding="utf-8")
    os.replace(tmp, path)


async def _run(args: argparse.Namespace) -> int:
    from authz_server.runtime.server import start_server

    stats_path = Path(args.stats)
    stop_server: Callable[[float], Awaitable[None]]
    read: Callable[[], dict[str, Any]]
    if args.kind == "noop":
        noop = await start_noop_server(args.listen)
        port, stop_server = noop.port, noop.stop

        def read() -> dict[str, Any]:
            return {"decisions": noop.service.decisions}

    else:
        verifier = CertificateVerifier()
        bundles = dict(parse_bundle_spec(spec) for spec in args.trust_bundle)
        settings = Settings(
            policy=args.policy,
            listen=args.listen,
            trust_bundles=bundles,
            audit_log=args.audit_log,
            # AuthZEN beside Check (phase E): plaintext on loopback, h2load has no client cert.
            authzen_listen=args.authzen_listen,
            authzen_insecure_local=args.authzen_listen is not None,
        )
        running = await start_server(settings, pipeline=Pipeline(MemoryStore(), verifier=verifier))
        port, stop_server = running.port, running.stop

        def read() -> dict[str, Any]:
            info = verifier.cache_info()
            return {
                "decisions": running.service.decisions,
                "cert_cache": {"hits": info.hits, "misses": info.misses, "size": info.currsize},
                "audit_records": running.audit.stats.records,
                "authzen_port": running.authzen_port,
                "authzen_decisions": (
                    running.authzen.handler.service.decisions if running.authzen else 0
                ),
            }

    seq = 0

    def dump() -> None:
        nonlocal seq
        seq += 1
        _write_stats(stats_path, {"seq": seq, "pid": os.getpid(), "port": port, **read()})

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, dump)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dump()  # ready
    await stop.wait()
    await stop_server(1.0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("kind", choices=["authz", "noop"])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--stats", required=True, help="JSON file written on ready and SIGUSR1")
    parser.add_argument("--policy")
    parser.add_argument("--trust-bundle", action="append", default=[], metavar="TD=PEM")
    parser.add_argument("--audit-log", default=None)
    parser.add_argument(
        "--authzen-listen", default=None, help="also serve AuthZEN here (plaintext, loopback)"
    )
    parser.add_argument("--uvloop", action="store_true", help="run the event loop on uvloop")
    args = parser.parse_args(argv)
    if args.kind == "authz" and not args.policy:
        parser.error("authz needs --policy")
    if args.uvloop:
        import uvloop

        return uvloop.run(_run(args))
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
