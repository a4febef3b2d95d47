"""The web approval console: approvals and revocations for admins, over mutual TLS."""
