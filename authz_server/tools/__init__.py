"""Tooling around the server: dev certificates, Envoy templates and linting, the demo stack."""
