"""Establishing and verifying who is calling (SPEC §4)."""
