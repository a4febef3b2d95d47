"""The Check path: the phases of one decision, the gRPC servicer, the response, offline
decisions and replay.
"""
