"""Which policies `--workers N` may serve on the memory store (`runtime.shared_state`)."""

from __future__ import annotations

from typing import Any

import pytest

from authz_server.core.errors import ConfigError
from authz_server.policy.load import load_policy_text
from authz_server.runtime.settings import Settings
from authz_server.runtime.shared_state import require_shareable

HEAD = """\
version: 1
identity: {trust_domains: [example.org]}
rules:
  - id: orders-read
    paths: ["/v1/orders/**"]
    effect: allow
"""
RATE = """\
  - id: transfers
    paths: ["/v1/transfers"]
    effect: allow
    when:
      rate_limit: {requests: 2, per: 1h}
"""
APPROVAL = """\
  - id: releases
    paths: ["/v1/releases/**"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/humans/*"], ttl: 15m}
"""
MEMORY_WORKERS: dict[str, Any] = {"workers": 3, "listen": "0.0.0.0:9191"}
IN_A_WORKER: dict[str, Any] = {"worker": 1, "revocations_file": "/run/r.json"}
REDIS: dict[str, Any] = {"workers": 3, "store": "redis://redis:6379/0"}


@pytest.mark.parametrize(
    ("policy", "settings", "refused"),
    [
        pytest.param(HEAD, MEMORY_WORKERS, None, id="stateless-on-memory-workers"),
        pytest.param(HEAD + RATE, {}, None, id="rate-limit-one-process"),
        pytest.param(HEAD + RATE + APPROVAL, REDIS, None, id="stateful-on-redis-workers"),
        pytest.param(HEAD + RATE, MEMORY_WORKERS, "transfers (rate_limit)", id="rate-limit"),
        pytest.param(HEAD + APPROVAL, MEMORY_WORKERS, "releases (approval)", id="approval"),
        pytest.param(HEAD + RATE, IN_A_WORKER, "--workers N: N>1", id="inside-a-worker"),
    ],
)
def test_require_shareable(policy: str, settings: dict[str, Any], refused: str | None) -> None:
    """Only memory + several workers + approvals or rate limits is refused, saying why."""
    loaded = load_policy_text(policy)
    config = Settings(policy="p.yaml", **settings)
    if refused is None:
        assert require_shareable(loaded, config) is loaded
        return
    with pytest.raises(ConfigError) as info:
        require_shareable(loaded, config)
    assert refused in str(info.value)
    assert "needs a shared store: --store redis://HOST:PORT/DB" in str(info.value)
