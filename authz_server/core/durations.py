"""Durations as people write them: `90s`, `15m`, `1h30m`, `7d` (policy `ttl`/`per`, CLI `--ttl`).

One syntax for the policy and the admin CLI, so that a `ttl: 15m` in a rule and
`revoke --ttl 15m` mean the same thing. Units are s, m, h, d, each at most once and in that
order of magnitude (largest first); no fractions, no spaces, no bare numbers: a bare `15`
could be seconds or minutes, and a misread ttl loosens a policy.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DURATION_S", "parse_duration_s"]

_DURATION = re.compile(r"(?:(\d{1,9})d)?(?:(\d{1,9})h)?(?:(\d{1,9})m)?(?:(\d{1,9})s)?")
_UNITS_S = (86400, 3600, 60, 1)
#: Ten years: long enough for "until further notice", short enough to stay finite.
MAX_DURATION_S = 10 * 365 * 86400


def parse_duration_s(text: str) -> int:
    """Whole seconds, > 0 and at most `MAX_DURATION_S`; ValueError quoting `text` otherwise."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if not text or match is None:
        raise ValueError(f"duration {text!r}: use e.g. 90s, 15m, 1h30m or 7d")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS_S, strict=True) if n)
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration {text!r} is longer than ten years")
    return seconds
