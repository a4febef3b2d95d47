"""The policy language (SPEC §5): model, loader, compiled route index, evaluation."""
