"""What approval notifications cost a Check: none, a live receiver, a dead one.

    python -m bench.notify [--n 2000]

Each Check is a new action on an approval rule, so each creates a pending record and
emits a `pending` event (the most a Check can do for the notifier). It times
`Pipeline.evaluate` alone, in wall-clock µs, while the notifier delivers in the
background between Checks: to a live aiohttp receiver on 127.0.0.1, to a closed port
(every delivery fails and is retried, the queue fills up and then drops), and with no
notifier at all. The three columns should be alike: `emit` only puts on a queue.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from authz_server.check.pipeline import Pipeline
from authz_server.check.snapshot import Snapshot
from authz_server.core.decision import Reason
from authz_server.core.request import RequestView
from authz_server.identity.bundles import TrustBundles
from authz_server.notify.notifier import Notifier
from authz_server.policy.load import load_policy_text
from authz_server.state.memory import MemoryStore
from authz_server.telemetry.metrics import Metrics

__all__ = ["main"]

POLICY = """\
version: 1
identity: {{trust_domains: [example.org]}}
admin:
  approvals:
    notify: {notify}
rules:
  - id: transfers
    methods: [POST]
    paths: ["/v1/transfers"]
    effect: allow
    when:
      approval:
        approvers: ["spiffe://example.org/humans/*"]
        preview_fields: [amount, destination.country]
"""


@asynccontextmanager
async def _receiver() -> AsyncIterator[str]:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


async def _run(url: str | None, secret_file: Path, n: int) -> list[float]:
    """Wall µs of each of `n` Checks that each create a pending approval."""
    notify = "[]" if url is None else f"[{{url: '{url}', secret_file: '{secret_file}'}}]"
    policy = load_policy_text(POLICY.format(notify=notify))
    store = MemoryStore(max_pending=n + 1)
    notifier = Notifier.from_policy(policy, store, Metrics())
    await notifier.start()
    pipeline = Pipeline(store=store)
    snapshot = Snapshot(policy, TrustBundles.empty())
    headers = {"content-type": "application/json"}
    costs = []
    try:
        for i in range(n):
            body = b'{"amount": %d, "destination": {"country": "DE"}}' % i
            view = RequestView(
                "POST", "pay.internal", "/v1/transfers", "", headers, body,
                principal="spiffe://example.org/agents/bench",
            )  # fmt: skip
            started = time.perf_counter()
            decision = await pipeline.evaluate(view, snapshot)
            costs.append((time.perf_counter() - started) * 1e6)
            assert decision.reason is Reason.APPROVAL_REQUIRED
            await asyncio.sleep(0)  # let the notifier work between Checks
    finally:
        await notifier.close()
    return costs


async def _bench(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "secret"
        secret.write_bytes(b"bench-secret-of-sixteen-bytes")
        async with _receiver() as live:
            runs = {
                "no notifier": await _run(None, secret, n),
                "live receiver": await _run(live, secret, n),
                "dead receiver": await _run(_dead_url(), secret, n),
            }
    print(f"Check with a new pending approval, {n} Checks, wall µs")
    print(f"{'':16}{'median':>10}{'p90':>10}{'p99':>10}")
    for name, costs in runs.items():
        q = statistics.quantiles(costs, n=100)
        print(f"{name:16}{statistics.median(costs):10.1f}{q[89]:10.1f}{q[98]:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Checks per column")
    asyncio.run(_bench(parser.parse_args().n))


if __name__ == "__main__":
    main()
