"""A real browser for the console tests: Debian's chromium driven by Playwright.

Playwright's own browser download is not used (nor reachable on air-gapped machines): the
tests launch /usr/bin/chromium (`make system-deps` installs it). A missing browser FAILS
these tests, with what to do; it never skips them.

Client certificates are presented by Playwright (`client_certificates`), which makes the
TLS connections itself; its Node driver is told to trust the console's CA through
`NODE_EXTRA_CA_CERTS`, so the server certificate is verified, not ignored.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.unit.console.support import Console, Pki, console, make_pki

if TYPE_CHECKING:  # Playwright names the type only in its implementation package
    from playwright._impl._api_structures import ClientCertificate

__all__ = ["OpenAs", "browser", "chromium", "console", "open_as", "open_context", "pki"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000

OpenAs = Callable[[tuple[str, str] | None], Awaitable[BrowserContext]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("browser-pki"))


@asynccontextmanager
async def chromium(ca_file: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Browser]:
    """Debian's chromium under Playwright, its driver trusting the server CA `ca_file`."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser tests need Debian's chromium "
            "(run `make system-deps`, or `apt-get install chromium`)",
            pytrace=False,
        )
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", ca_file)  # read when the driver starts
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_context(
    browser: Browser, origin: str, identity: tuple[str, str] | None
) -> BrowserContext:
    """A fresh browser profile presenting `identity` (cert, key files) to `origin`."""
    certificates: list[ClientCertificate] = []
    if identity is not None:
        cert, key = identity
        certificates.append({"origin": origin, "certPath": cert, "keyPath": key})
    context = await browser.new_context(
        client_certificates=certificates,
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
async def browser(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Browser]:
    async with chromium(pki.ca_file, monkeypatch) as launched:
        yield launched


@pytest.fixture
async def open_as(browser: Browser, console: Console) -> OpenAs:
    """A fresh browser profile presenting `identity` (cert, key files) to the console."""

    async def open_console(identity: tuple[str, str] | None) -> BrowserContext:
        return await open_context(browser, console.url, identity)

    return open_console
