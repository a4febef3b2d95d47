"""A real webhook receiver for the notifier tests: aiohttp on 127.0.0.1, port 0.

It records every request (headers, raw body), answers with the statuses it is told to
(in order, then 200), and can hold every request until the test opens its gate. The
receiver snippet of the documentation (docs/policy/notifications.md#verify) is read from
that page, so the tests prove the documented receiver logic, not a copy of it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

NOTIFICATIONS_PAGE = Path(__file__).resolve().parents[3] / "docs" / "policy" / "notifications.md"
SECRET = b"0123456789abcdef-test-secret"


@dataclass
class Received:
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    #: Answered in order before the default 200.
    statuses: list[int] = field(default_factory=list)
    #: Requests wait here until it is set (set by default).
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: int = 0

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Until `count` requests were answered 2xx; all answered requests."""

        async def enough() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout_s)
        return self.received


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """A running receiver; its `url` is http://127.0.0.1:<port>/hook."""
    state = Receiver(url="")
    state.gate.set()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        await state.gate.wait()
        state.attempts += 1
        if state.statuses:
            return web.Response(status=state.statuses.pop(0))
        state.received.append(Received(CIMultiDict(request.headers), body))
        state.arrived.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield state
    finally:
        state.gate.set()
        await runner.cleanup()


def dead_url() -> str:
    """A URL on a loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def documented_receiver() -> dict[str, Any]:
    """The namespace of the Python receiver snippet under "Verifying a notification" in
    docs/policy/notifications.md: its `verify` and `accept`."""
    text = NOTIFICATIONS_PAGE.read_text(encoding="utf-8")
    section = text.split("## Verifying a notification", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"{NOTIFICATIONS_PAGE}: no python snippet under Verifying"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), str(NOTIFICATIONS_PAGE), "exec"), namespace)
    return namespace
