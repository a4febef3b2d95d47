"""The admin gRPC API (docs/operations/admin-api.md): approvals, revocations, explain, policy
status."""
