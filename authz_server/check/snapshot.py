"""What one Check runs against: the policy and trust bundles, replaced whole on reload.

`runtime/reload.py` builds a new `Snapshot` and swaps it into the `SnapshotHolder`; each
Check (and each AuthZEN evaluation, each console or admin request) reads
`holder.snapshot` once, so a decision that started on one version finishes on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz_server.identity.bundles import TrustBundles
from authz_server.policy.model import Policy

__all__ = ["Snapshot", "SnapshotHolder"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The policy and bundles one Check runs against; replaced whole on reload."""

    policy: Policy
    bundles: TrustBundles


class SnapshotHolder:
    """The snapshot in force; None until a policy and bundles are ready (fail closed)."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot
