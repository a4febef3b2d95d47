"""authz-server: per-action authorization for Envoy, keyed on SPIFFE workload identity."""

__version__ = "0.1.0"
