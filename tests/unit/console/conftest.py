"""Fixtures of the console tests: a real console over mutual TLS (see `support`)."""

from tests.unit.console.support import console, pki

__all__ = ["console", "pki"]
