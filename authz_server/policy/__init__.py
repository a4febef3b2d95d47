"""The policy language (docs/policy/reference.md): model, loader, compiled route index,
evaluation."""
