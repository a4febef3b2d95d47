"""`authz-server demo`: real Envoy + authz-server + an echo backend on loopback."""
