"""The callers of the bypass corpus: good SVIDs and certificates that try identity tricks.

Written in the layout `tests.e2e.harness.Certs` reads (`ca.pem`, `partner-ca.pem`,
`envoy.pem`, `NAME.pem`/`NAME.key`), plus `pool.pem`: every CA in one trusted_ca file,
the misconfiguration under which the identity tricks reach authz-server through Envoy.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from authz_server.tools import devcerts
from tests.e2e.harness import Certs

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
HUMAN = "spiffe://example.org/humans/alice"
AGENT = "spiffe://example.org/agents/acme/bot"
PARTNER = "spiffe://partner.org/billing/app"
#: A trust domain whose name starts with ours: a prefix check would trust it.
EVIL_TD = "example.org.evil.com"

#: name: (issuing CA, URI SAN as Envoy reports it, extra URI SANs)
LEAVES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "frontend": ("ours", FRONTEND, ()),
    "human": ("ours", HUMAN, ()),
    "agent": ("ours", AGENT, ()),
    "partner": ("partner", PARTNER, ()),
    # Envoy reports the first URI SAN; an X509-SVID has exactly one.
    "two-uris": ("ours", FRONTEND, (HUMAN,)),
    # partner.org's CA minting one of our identities.
    "forged": ("partner", HUMAN, ()),
    # Trust-domain confusion: a look-alike domain with its own CA.
    "suffix-td": ("evil", f"spiffe://{EVIL_TD}/humans/alice", ()),
    # Our CA, but IDs a lenient parser would normalise into a permitted one.
    "upper-td": ("ours", "spiffe://EXAMPLE.org/humans/alice", ()),
    "dot-segment": ("ours", "spiffe://example.org/humans/..", ()),
    "trailing-slash": ("ours", "spiffe://example.org/humans/alice/", ()),
    "encoded": ("ours", "spiffe://example.org/humans/%61lice", ()),
    "port": ("ours", "spiffe://example.org:443/humans/alice", ()),
    "userinfo": ("ours", "spiffe://x@example.org/humans/alice", ()),
}


class Identities(Certs):
    """The certificate directory, plus what a direct Check needs for each caller."""

    @property
    def pool(self) -> Path:
        return self.dir / "pool.pem"

    def principal(self, name: str) -> str:
        return LEAVES[name][1]

    def certificate(self, name: str) -> str:
        """The leaf as Envoy forwards it in `source.certificate`: URL-encoded PEM."""
        return urllib.parse.quote(self.pair(name)[0].read_text(), safe="")


def mint_identities(out: Path) -> Identities:
    out.mkdir(parents=True, exist_ok=True)
    authorities = {
        "ours": devcerts.mint_ca("example.org"),
        "partner": devcerts.mint_ca("partner.org"),
        "evil": devcerts.mint_ca(EVIL_TD),
    }
    (out / "ca.pem").write_bytes(devcerts.pem(authorities["ours"].certificate))
    (out / "partner-ca.pem").write_bytes(devcerts.pem(authorities["partner"].certificate))
    (out / "pool.pem").write_bytes(
        b"".join(devcerts.pem(a.certificate) for a in authorities.values())
    )
    envoy, key = devcerts.mint_svid(
        authorities["ours"], "spiffe://example.org/envoy/front-proxy", dns_names=("localhost",)
    )
    (out / "envoy.pem").write_bytes(devcerts.pem(envoy))
    (out / "envoy.key").write_bytes(devcerts.key_pem(key))
    for name, (issuer, spiffe_id, extra) in LEAVES.items():
        cert, key = devcerts.mint_svid(authorities[issuer], spiffe_id, extra_uris=extra)
        (out / f"{name}.pem").write_bytes(devcerts.pem(cert))
        (out / f"{name}.key").write_bytes(devcerts.key_pem(key))
    return Identities(out)
