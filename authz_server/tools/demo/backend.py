"""A tiny HTTP/1.1 echo backend: what reached upstream, as JSON.

The demo and the e2e tests put it behind Envoy to see exactly which method, path and
headers survived authorization (e.g. that a forged `x-authz-principal` was stripped).
Run it with `python -m authz_server.tools.demo.backend --port N`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["EchoHandler", "main", "make_server"]

#: Request bodies are read (so the connection stays usable) but never echoed or kept.
_MAX_BODY = 1 << 20


class EchoHandler(BaseHTTPRequestHandler):
    """Answers any method with `{"method", "path", "headers"}`; header names lowercased."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects
    server_version = "authz-demo-backend"
    sys_version = ""
    # Headers and body go out in separate writes; with Nagle on, the second waits ~40 ms
    # for the delayed ACK and every request through Envoy pays it.
    disable_nagle_algorithm = True

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if 0 < length <= _MAX_BODY:
            self.rfile.read(length)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            # Repeated headers are joined, as an HTTP application would see them.
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        payload = json.dumps(
            {"method": self.command, "path": self.path, "headers": headers}, sort_keys=True
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

    def log_message(self, format: str, *args: object) -> None:
        """One line per request on stderr, so a failing test can show what arrived."""
        sys.stderr.write(f"backend: {self.address_string()} {format % args}\n")


def make_server(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A bound, not yet serving, echo server (port 0 picks a free one)."""
    server = ThreadingHTTPServer((host, port), EchoHandler)
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted; prints `listening on HOST:PORT` once bound."""
    parser = argparse.ArgumentParser(prog="python -m authz_server.tools.demo.backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)
    host, port = server.server_address[:2]
    print(f"listening on {host!s}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
