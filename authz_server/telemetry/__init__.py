"""Operational signals: Prometheus metrics and OpenTelemetry traces."""
