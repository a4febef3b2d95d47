"""Frozen settings for `serve`, from flags with `AUTHZ_*` environment fallbacks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Settings:
    policy: str
    listen: str = "0.0.0.0:9191"
    trust_bundles: Mapping[str, str] = field(default_factory=dict)
    audit_log: str | None = None
    grace_seconds: float = 10.0
    log_level: str = "INFO"


def env_name(flag: str) -> str:
    """`--trust-bundle` → `AUTHZ_TRUST_BUNDLE`."""
    return "AUTHZ_" + flag.lstrip("-").upper().replace("-", "_")
