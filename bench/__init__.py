"""`make bench`: authz-server against a do-nothing server and Envoy's RBAC filter
(docs/performance.md#method)."""
