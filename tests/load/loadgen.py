"""A bounded HTTPS load generator for loopback tests: `python -m tests.load.loadgen ...`.

Runs in its own process so that it does not share a GIL with pytest. Worker threads each
keep one mTLS keep-alive connection to Envoy and send GETs, cycling through `--path`,
until `--count` requests are done, `--max-seconds` pass or `--stop-file` appears,
whichever comes first: it always stops by itself. Prints one JSON summary line; with
`--out`, one JSON line per request (start offset, latency, status, decision id, deny
reason) for the caller to check against the audit log. A connection error is recorded
as status 0, and the worker reconnects.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Result:
    index: int
    path: str
    start: float  # seconds since the run began
    latency_ms: float
    status: int
    decision_id: str | None
    reason: str | None
    #: The body of an answer that carries no decision (Envoy's own), or the client error.
    detail: str | None = None
    error: str | None = None


def _decision(status: int, headers: dict[str, str], body: bytes) -> tuple[str | None, str | None]:
    """The decision id (and deny reason) the response carries."""
    try:
        if status == 200:  # the echo backend reports what reached it
            return json.loads(body)["headers"].get("x-authz-decision-id"), None
        if "x-authz-decision-id" in headers:
            return headers["x-authz-decision-id"], json.loads(body).get("reason")
    except (ValueError, KeyError, TypeError):
        pass
    return None, None


class _Connection(http.client.HTTPSConnection):
    """Keep-alive HTTPS to 127.0.0.1, verifying Envoy's certificate as `localhost`."""

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(LOOPBACK, port, timeout=timeout, context=context)
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((LOOPBACK, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname="localhost")


class LoadRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context = ssl.create_default_context(cafile=args.ca)
        self.context.load_cert_chain(args.cert, args.key)
        self.tickets = itertools.count()
        self.lock = threading.Lock()
        self.results: list[Result] = []
        self.started = time.monotonic()
        self.deadline = self.started + args.max_seconds

    def _connect(self) -> http.client.HTTPSConnection:
        return _Connection(self.args.port, self.context, self.args.timeout)

    def worker(self) -> None:
        connection = self._connect()
        paths: Sequence[str] = self.args.path
        stop_file = self.args.stop_file
        while time.monotonic() < self.deadline:
            if stop_file is not None and os.path.exists(stop_file):
                break
            with self.lock:
                index = next(self.tickets)
            if index >= self.args.count:
                break
            path = paths[index % len(paths)].replace("{n}", str(index))
            begin = time.monotonic()
            try:
                connection.request("GET", path, headers={"Host": self.args.host})
                response = connection.getresponse()
                body = response.read()
                headers = {k.lower(): v for k, v in response.getheaders()}
                decision_id, reason = _decision(response.status, headers, body)
                # An answer without a decision is Envoy's own: keep what it said.
                detail = None if decision_id else body[:160].decode("utf-8", "replace")
                result = Result(
                    index, path, begin - self.started, (time.monotonic() - begin) * 1e3,
                    response.status, decision_id, reason, detail,
                )  # fmt: skip
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = self._connect()
                result = Result(
                    index, path, begin - self.started, (time.monotonic() - begin) * 1e3,
                    0, None, None, None, f"{type(error).__name__}: {error}",
                )  # fmt: skip
            with self.lock:
                self.results.append(result)
        connection.close()

    def run(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self.worker) for _ in range(self.args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - self.started
        latencies = sorted(r.latency_ms for r in self.results if r.status)
        return {
            "requests": len(self.results),
            "seconds": round(elapsed, 3),
            "rps": round(len(self.results) / elapsed, 1) if elapsed else 0.0,
            "statuses": dict(Counter(str(r.status) for r in self.results)),
            "errors": sum(1 for r in self.results if r.error),
            "p50_ms": _percentile(latencies, 0.50),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": round(latencies[-1], 2) if latencies else None,
            "timed_out": time.monotonic() >= self.deadline,
        }


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument(
        "--path", action="append", required=True, help="repeatable, cycled; {n}: request number"
    )
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="per request")
    parser.add_argument("--out", help="write one JSON line per request here")
    parser.add_argument("--stop-file", help="stop once this file exists")
    args = parser.parse_args(argv)
    run = LoadRun(args)
    summary = run.run()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for result in sorted(run.results, key=lambda r: r.start):
                f.write(json.dumps(asdict(result)) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
