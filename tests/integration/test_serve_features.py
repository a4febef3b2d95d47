"""`serve` with the approval console, the AuthZEN API and approval notifications turned on.

The rig (tests/integration/serve_features_support.py) runs a real `python -m authz_server
serve` with every listener and a real webhook receiver; each test ends with SIGTERM and
exit 0.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from authz_server.cli.main import main
from authz_server.core.errors import ConfigError
from authz_server.runtime.server import start_server
from authz_server.tools.stack import free_port
from tests.integration.serve_features_support import (
    AGENT,
    FRONTEND,
    SERVER,
    Served,
    received,
    serve_with_features,
    verified,
)
from tests.integration.serve_support import (
    ALICE,
    RELEASE,
    approval_id_for,
    deny_body,
    release,
    write_files,
)
from tests.integration.support import (
    check,
    eventually,
    outcome,
    request_for,
    serve_process,
)

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_with_features(tmp_path) as running:
        yield running


async def _get(served: Served, who: str | None, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        url = served.url("console", path)
        async with session.get(url, ssl=served.tls(who), allow_redirects=False) as response:
            return response.status, await response.text()


async def _post(served: Served, who: str, path: str, form: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        url = served.url("console", path)
        async with session.post(
            url, data=form, ssl=served.tls(who), allow_redirects=False
        ) as response:
            return response.status, response.headers.get("Location", "")


async def test_pending_approval_is_announced_and_decided_in_the_console(served: Served) -> None:
    """A real Check hits the approval rule: the receiver gets a signed `pending` event that
    links to the console; the approver sees it there over mutual TLS and approves it with
    the page's CSRF token; the retry is allowed and the decision is announced too."""
    async with served.channel() as channel:
        approval_id = await approval_id_for(channel, release())

        await served.hook.wait_for(1)
        (pending,) = verified(served.hook, "pending")
        assert pending["approval_id"] == approval_id
        assert pending["requester"] == RELEASE
        assert pending["rule"]["id"] == "releases-publish"
        assert pending["console_url"] == served.url("console", f"/approvals/{approval_id}")

        status, page = await _get(served, "alice", "/approvals")
        assert status == 200
        assert approval_id in page
        status, page = await _get(served, "alice", f"/approvals/{approval_id}")
        assert status == 200
        assert "releases-publish" in page and RELEASE in page
        token = CSRF_FIELD.search(page)
        assert token is not None, page

        form = {"decision": "approve", "reason": "release v7", "csrf": token.group(1)}
        status, location = await _post(served, "alice", f"/approvals/{approval_id}/decide", form)
        assert (status, location) == (303, f"/approvals/{approval_id}?done=approved")

        assert outcome(await check(channel, release())) == "allow"
        assert outcome(await check(channel, release())) == "approval_required"  # single use
        await eventually(lambda: received(served.hook, "approved"), "the approved event")
        (approved,) = verified(served.hook, "approved")
        assert (approved["approval_id"], approved["decided_by"]) == (approval_id, ALICE)
    assert served.stop()[0] == 0


async def test_console_requires_an_admin_client_certificate(served: Served) -> None:
    """No client certificate: no handshake; a workload that is no admin: 403."""
    with pytest.raises(aiohttp.ClientError):
        await _get(served, None, "/approvals")
    status, _ = await _get(served, "frontend", "/approvals")
    assert status == 403
    assert served.stop()[0] == 0


#: (case, subject, method, path): asked through AuthZEN by the gateway, as a Check by Envoy.
AUTHZEN_CASES = [
    ("allowed", FRONTEND, "GET", "/v1/orders/7"),
    ("deny-rule", FRONTEND, "GET", "/v1/orders/admin/users"),
    ("no-rule-method", FRONTEND, "DELETE", "/v1/orders/7"),
    ("no-rule-principal", AGENT, "GET", "/v1/orders/7"),
    ("non-canonical", FRONTEND, "GET", "/v1/orders/a/../admin"),
]


async def _evaluate(
    served: Served, caller: str | None, subject: str, method: str, path: str
) -> tuple[int, dict[str, Any]]:
    document = {
        "subject": {"type": "spiffe", "id": subject},
        "action": {"name": method},
        "resource": {"type": "http", "id": path, "properties": {"host": "orders.internal"}},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            served.url("authzen", "/access/v1/evaluation"), json=document, ssl=served.tls(caller)
        ) as response,
    ):
        return response.status, await response.json()


def _served_identity(served: Served, listener: str) -> list[str]:
    """The URI SANs of the certificate `listener` presents to the gateway."""
    address = ("127.0.0.1", served.ports[listener])
    with (
        socket.create_connection(address, timeout=5) as raw,
        served.tls("gateway").wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return [str(uri) for uri in names.value.get_values_for_type(x509.UniformResourceIdentifier)]


async def test_authzen_decides_like_a_check(served: Served) -> None:
    """Each case gets the same decision, reason and rule through AuthZEN (the trusted
    gateway asking about the subject) as a Check carrying that subject; AuthZEN serves the
    Check listener's certificate."""
    async with served.channel() as channel:
        for case, subject, method, path in AUTHZEN_CASES:
            status, body = await _evaluate(served, "gateway", subject, method, path)
            assert status == 200, body
            response = await check(channel, request_for(subject, method=method, path=path))
            context, reason = body["context"], outcome(response)
            if reason == "allow":
                reason, rule = "allowed_by_rule", _ok_header(response, "x-authz-rule")
            else:
                rule = deny_body(response).get("rule")
            assert (body["decision"], context["reason"]) == (reason == "allowed_by_rule", reason)
            assert context.get("rule") == rule, case
    assert _served_identity(served, "authzen") == _served_identity(served, "check") == [SERVER]
    assert served.stop()[0] == 0


def _ok_header(response: Any, name: str) -> str | None:
    for option in response.ok_response.headers:
        if option.header.key == name:
            return str(option.header.value)
    return None


async def test_authzen_callers_who_are_not_trusted_ask_only_about_themselves(
    served: Served,
) -> None:
    """The frontend is no trusted PEP: about itself it gets an answer, about another
    subject `subject_not_caller`; without a client certificate there is no handshake."""
    status, body = await _evaluate(served, "frontend", FRONTEND, "GET", "/v1/orders/7")
    assert (status, body["decision"], body["context"]["reason"]) == (
        200, True, "allowed_by_rule",
    )  # fmt: skip
    status, body = await _evaluate(served, "frontend", AGENT, "GET", "/v1/orders/7")
    assert (status, body["decision"], body["context"]["reason"]) == (
        200, False, "subject_not_caller",
    )  # fmt: skip
    with pytest.raises(aiohttp.ClientError):
        await _evaluate(served, None, FRONTEND, "GET", "/v1/orders/7")
    assert served.stop()[0] == 0


async def test_sigterm_stops_every_listener_and_exits_0(served: Served) -> None:
    """serve prints each listener's port; after SIGTERM it exits 0 and none answers."""
    code, out = served.stop()
    assert code == 0, served.log_tail()
    ports = served.ports
    for line in (
        f"authz-server: Check listening on port {ports['check']}",
        f"authz-server: admin API on port {ports['admin']}",
        f"authz-server: approval console on port {ports['console']}",
        f"authz-server: AuthZEN API on port {ports['authzen']}",
    ):
        assert line in out.splitlines(), out
    for port in ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_a_listener_that_cannot_bind_undoes_the_start(tmp_path: Path) -> None:
    """The AuthZEN port is taken: start_server raises one ConfigError naming it, after
    stopping what had started (the Check, admin and console ports are free again)."""
    files = write_files(tmp_path)
    cert, key = (str(p) for p in files.pair("admin-server"))
    ports = {name: free_port() for name in ("check", "admin", "console")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = files.settings(
            listen=f"127.0.0.1:{ports['check']}",
            admin_listen=f"127.0.0.1:{ports['admin']}",
            console_listen=f"127.0.0.1:{ports['console']}",
            console_tls_cert=cert,
            console_tls_key=key,
            authzen_listen=f"127.0.0.1:{taken.getsockname()[1]}",
            authzen_insecure_local=True,
            audit_log=str(tmp_path / "audit.jsonl"),
        )
        with pytest.raises(ConfigError, match=r"^--authzen-listen: AuthZEN: cannot listen on"):
            await start_server(settings)
    for name, port in ports.items():
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # OSError if the failed start left it bound
            assert again.getsockname()[1] == port, name


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(["--console-listen", "127.0.0.1:0"], {}, "--console-listen needs --console-tls-cert and --console-tls-key", id="console-without-certificate"),
        pytest.param([], {"AUTHZ_CONSOLE_LISTEN": "127.0.0.1:0"}, "--console-listen needs --console-tls-cert", id="console-from-environment"),
        pytest.param(["--console-tls-cert", "c.pem", "--console-tls-key", "k.pem"], {}, "need --console-listen", id="console-certificate-without-listener"),
        pytest.param(["--authzen-listen", "127.0.0.1:0"], {}, "--authzen-listen needs TLS: --authzen-tls-cert/--authzen-tls-key, or TLS on the Check listener", id="authzen-without-tls"),
        pytest.param(["--authzen-listen", "0.0.0.0:0", "--authzen-insecure-local"], {}, "--authzen-insecure-local binds loopback only", id="authzen-plaintext-off-loopback"),
        pytest.param(["--authzen-listen", "127.0.0.1:0", "--authzen-insecure-local", "--authzen-tls-cert", "c.pem", "--authzen-tls-key", "k.pem"], {}, "choose one", id="authzen-insecure-and-certificate"),
        pytest.param(["--authzen-listen", "127.0.0.1:0", "--authzen-insecure-local"], {"AUTHZ_AUTHZEN_MAX_BODY": "0"}, "--authzen-max-body must be between 1 and", id="authzen-max-body-zero"),
        pytest.param(["--authzen-listen", "127.0.0.1:0", "--authzen-insecure-local", "--authzen-public-url", "http://pdp.example"], {}, "--authzen-public-url: AuthZEN public URL 'http://pdp.example' must be https://", id="authzen-public-url-plaintext"),
        pytest.param(["--authzen-listen", "localhost"], {}, "--authzen-listen 'localhost': expected HOST:PORT", id="authzen-bad-address"),
        pytest.param(["--authzen-listen", "127.0.0.1:0", "--authzen-tls-cert", "missing.pem", "--authzen-tls-key", "missing.key"], {}, "--authzen-tls-cert 'missing.pem'", id="authzen-certificate-missing"),
    ],
)  # fmt: skip
def test_unusable_listener_flags_are_one_clear_error(
    args: list[str],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 1 with one line naming the flag, before any port is bound."""
    files = write_files(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    argv = ["serve", "--policy", str(files.policy), "--listen", "127.0.0.1:0"]
    argv += ["--metrics-listen", "off", "--admin-listen", "off", *args]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


STATELESS_POLICY = """\
version: 1
identity: {trust_domains: [example.org]}
admin:
  principals: ["spiffe://example.org/humans/**"]
rules:
  - id: orders-read
    methods: [GET]
    paths: ["/v1/orders/**"]
    principals: ["spiffe://example.org/ns/shop/**"]
    effect: allow
"""


async def test_with_workers_the_console_runs_in_worker_0_and_authzen_in_each(
    tmp_path: Path,
) -> None:
    """`--workers 2`: worker 1 leaves the console to worker 0 (its CSRF secret is per
    process) and both share the AuthZEN port; the console answers on every new
    connection, AuthZEN too, and SIGTERM stops all with exit 0."""
    files = write_files(tmp_path, STATELESS_POLICY)
    cert, key = (str(p) for p in files.pair("admin-server"))
    ports = {name: free_port() for name in ("check", "console", "authzen")}
    log = tmp_path / "serve.log"
    process = serve_process(
        files.policy,
        ports["check"],
        "--workers", "2",
        "--trust-bundle", f"example.org={files.ca_file}",
        "--admin-listen", "off",
        "--console-listen", f"127.0.0.1:{ports['console']}",
        "--console-tls-cert", cert, "--console-tls-key", key,
        "--authzen-listen", f"127.0.0.1:{ports['authzen']}", "--authzen-insecure-local",
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    try:
        console = ssl.create_default_context(cafile=str(files.ca_file))
        console.load_cert_chain(*(str(p) for p in files.pair("bob")))

        async def console_answers() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        f"https://127.0.0.1:{ports['console']}/approvals", ssl=console
                    ) as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(console_answers, "the console of worker 0")
        await eventually(
            lambda: (
                "worker1 authz_server.runtime.listeners: approval console: served by "
                "worker 0" in log.read_text()
            ),
            "worker 1 leaving the console to worker 0",
        )
        for _ in range(6):  # new connections each time: only worker 0 listens there
            assert await console_answers()
        document = {
            "subject": {"type": "spiffe", "id": FRONTEND},
            "action": {"name": "GET"},
            "resource": {"type": "http", "id": "/v1/orders/1", "properties": {"host": "o"}},
        }
        for _ in range(6):
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{ports['authzen']}/access/v1/evaluation", json=document
                ) as response,
            ):
                assert (response.status, (await response.json())["decision"]) == (200, True)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
