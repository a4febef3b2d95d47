"""The admin gRPC API (SPEC §3.2): approvals, revocations, explain, policy status."""
