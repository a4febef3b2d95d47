"""Every identity source, by name: the one list the loader and the resolver read.

A new source is a module exporting a `SourceKind` (see `source.py`) and one line here.
The order is the one error messages list the known sources in.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from authz_server.identity import jwt_svid, peer, xfcc
from authz_server.identity.source import SourceKind

__all__ = ["SOURCES"]

SOURCES: Mapping[str, SourceKind] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            peer.KIND,
            xfcc.KIND,
            jwt_svid.KIND,
        )
    }
)
