"""Listener plumbing shared by every server: TLS credentials, caller guards, binding addresses."""
