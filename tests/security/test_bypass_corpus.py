"""Every trick of the bypass corpus, straight to Check and through real Envoy.

A trick passes when it gets exactly the refusal the table expects; a control passes when
it is allowed. Through Envoy, whatever is allowed must be what the backend served: the
audit record of the decision names the very host and path the backend saw.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_server.check.service import CheckService
from authz_server.core.request import normalize_host
from tests.conftest import make_check_request
from tests.e2e import harness
from tests.security import corpus, rawhttp
from tests.security.conftest import EnvoyStack
from tests.security.identities import Identities


def _params(channel: str) -> list[Any]:
    return [
        pytest.param(
            trick,
            id=trick.id,
            marks=[pytest.mark.xfail(strict=True, reason=trick.gap)] if trick.gap else [],
        )
        for trick in corpus.CORPUS
        if getattr(trick, channel)
    ]


def _joined(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Headers as Envoy sends them to ext_authz: names lower-cased, repeats joined by ','."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


async def _direct(service: CheckService, identities: Identities, trick: corpus.Trick) -> str:
    principal = trick.principal or (identities.principal(trick.caller) if trick.caller else "")
    request = make_check_request(
        method=trick.method,
        host=trick.host,
        path=trick.path,
        headers=_joined(trick.headers),
        principal=principal,
        certificate=identities.certificate(trick.caller) if trick.caller else "",
        body=trick.body,
    )
    response = external_auth_pb2.CheckResponse.FromString(
        await service.check_bytes(request.SerializeToString())
    )
    if response.status.code == 0:
        return corpus.ALLOW
    reason: str = json.loads(response.denied_response.body)["reason"]
    return reason


@pytest.mark.parametrize("trick", _params("direct"))
async def test_trick_sent_straight_to_check(
    check_service: CheckService, identities: Identities, trick: corpus.Trick
) -> None:
    """Straight to Check, as a proxy without normalisation would send it."""
    assert await _direct(check_service, identities, trick) == trick.direct
    records: Any = getattr(check_service.audit, "records", [])
    assert len(records) == 1, "one audit record per decision"


def _through(envoy: EnvoyStack, channel: str, trick: corpus.Trick) -> str:
    ids = envoy.identities
    headers = [("Host", trick.host), *trick.headers]
    try:
        reply = rawhttp.send(
            envoy.proxies[channel].port,
            ca=ids.ca,
            cert=ids.pair(trick.caller) if trick.caller else None,
            method=trick.method,
            target=trick.target or trick.path,
            headers=headers,
            body=trick.body,
        )
    except rawhttp.REFUSED_ERRORS:
        return corpus.REFUSED
    if reply.status == 200:
        _served_is_what_was_judged(envoy, reply.json())
        return corpus.ALLOW
    if "x-authz-decision-id" not in reply.headers:
        assert 400 <= reply.status < 500, (reply.status, reply.body)
        return corpus.ENVOY
    body = reply.json()
    assert body["decision"] == "deny"
    records = harness.wait_for_audit(envoy.audit_log, body["decision_id"])
    assert [r["decision"] for r in records] == ["deny"], records
    reason: str = body["reason"]
    return reason


def _served_is_what_was_judged(envoy: EnvoyStack, seen: dict[str, Any]) -> None:
    """The backend's request is exactly the one authz-server allowed."""
    decision_id = seen["headers"]["x-authz-decision-id"]
    records = harness.wait_for_audit(envoy.audit_log, decision_id)
    assert len(records) == 1, records
    record = records[0]
    assert record["decision"] == "allow"
    assert record["path"] == seen["path"].partition("?")[0]
    assert record["host"] == normalize_host(seen["headers"]["host"])
    assert record["principal"] == seen["headers"]["x-authz-principal"]


@pytest.mark.e2e
@pytest.mark.parametrize("trick", _params("shipped"))
def test_trick_through_recommended_envoy(envoy_stack: EnvoyStack, trick: corpus.Trick) -> None:
    """Through `envoy/front-proxy.yaml` as shipped."""
    assert _through(envoy_stack, "shipped", trick) == trick.shipped


@pytest.mark.e2e
@pytest.mark.parametrize("trick", _params("lax"))
def test_trick_through_envoy_without_normalisation(
    envoy_stack: EnvoyStack, trick: corpus.Trick
) -> None:
    """Through Envoy with path normalisation off and a pooled trust store."""
    assert _through(envoy_stack, "lax", trick) == trick.lax


def test_every_trick_is_meant_to_be_refused() -> None:
    """Only controls expect an allow, and every trick runs on at least one channel."""
    for trick in corpus.CORPUS:
        answers = {trick.direct, trick.shipped, trick.lax} - {None}
        assert answers, trick.id
        assert (corpus.ALLOW in answers) == trick.id.startswith("control-"), trick.id
    ids = [trick.id for trick in corpus.CORPUS]
    assert len(ids) == len(set(ids))
