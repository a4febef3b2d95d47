"""The hash-chained audit log: writing, the record format, reading files back, verifying the
chain.
"""
