"""The running server: wiring, settings, workers, reload, probes."""
