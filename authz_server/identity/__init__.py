"""Establishing and verifying who is calling (docs/concepts/identity.md)."""
