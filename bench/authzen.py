"""Phase E: the AuthZEN HTTP path next to the gRPC Check path, on one authz-server process.

The same request mix (`workload.MIX`) is sent two ways to the process phase A measures
(same policy, same audit log), in alternation: as pre-framed CheckRequests over h2c (the
gRPC Check, exactly phase A's load) and as AuthZEN evaluations (JSON, one per request
kind) over HTTP/1.1 to that process's AuthZEN listener. h2load drives both from separate
processes (`--h1` for AuthZEN: aiohttp speaks HTTP/1.1 only).

The AuthZEN listener runs `--authzen-insecure-local` (plaintext on loopback): h2load
cannot present a client certificate, and the gRPC load is plaintext as well, so neither
path pays for TLS and the figures compare the two request paths themselves. The gRPC
requests carry the caller's certificate (verified, cache warm); an AuthZEN subject is
vouched for by the PEP and carries none. Unpaced, 4 requests are in flight per request
kind on both paths (gRPC: 1 connection with 4 streams; HTTP/1.1: 4 connections, one
request each, since HTTP/1.1 has no multiplexing and PEPs do not pipeline); paced runs
use one connection per kind on both.

Counts are proven as in the other phases: each answer is a 200 (an AuthZEN deny is a 200
with `decision: false`), h2load's count equals the AuthZEN service's decision counter,
and before any load a real HTTP client checks each request kind's decision and reason.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from bench.loadgen import LoadSpec, Target, run_load
from bench.phases import Bench, Sizes
from bench.procs import BenchProcess
from bench.workload import IDENTITIES, MIX, Call

__all__ = [
    "authzen_port",
    "authzen_targets",
    "cross_check",
    "evaluation",
    "measure",
    "warm",
    "write_bodies",
]

EVALUATION_PATH = "/access/v1/evaluation"
#: Connections per request kind: HTTP/1.1 answers one request per connection at a time.
CLIENTS = 4


def evaluation(call: Call) -> dict[str, Any]:
    """The AuthZEN evaluation a PEP sends for `call`: the subject, method, path and host."""
    document: dict[str, Any] = {
        "subject": {"type": "spiffe", "id": IDENTITIES[call.identity]},
        "action": {"name": call.method},
        "resource": {"type": "http", "id": call.path, "properties": {"host": call.host}},
    }
    if call.headers:
        document["context"] = {"headers": dict(call.headers)}
    return document


def write_bodies(workdir: Path) -> dict[str, Path]:
    """One JSON body per request kind, for h2load's `-d`."""
    directory = workdir / "bodies"
    directory.mkdir(parents=True, exist_ok=True)
    bodies = {}
    for call in MIX:
        path = directory / f"{call.name}.authzen.json"
        path.write_text(json.dumps(evaluation(call)), encoding="ascii")
        bodies[call.name] = path
    return bodies


def authzen_targets(port: int, bodies: dict[str, Path]) -> list[Target]:
    """h2load arguments: HTTP/1.1 POSTs of each kind's evaluation to loopback `port`."""
    uri = f"http://127.0.0.1:{port}{EVALUATION_PATH}"
    return [
        Target(
            call.name,
            uri,
            ("--h1", "-d", str(bodies[call.name]), "-H", "content-type: application/json"),
        )
        for call in MIX
    ]


def authzen_port(server: BenchProcess) -> int:
    port = server.stats().get("authzen_port")
    if not port:
        raise RuntimeError(f"{server.name}: no AuthZEN listener (bench.serve --authzen-listen)")
    return int(port)


def _decisions(server: BenchProcess) -> int:
    return int(server.stats()["authzen_decisions"])


def cross_check(bench: Bench, server: BenchProcess, port: int) -> None:
    """Every request kind once through a real HTTP client: decision and reason right."""
    before = _decisions(server)
    for call in MIX:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{EVALUATION_PATH}",
            data=json.dumps(evaluation(call)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answer = json.loads(response.read())
        got = (answer["decision"], answer["context"]["reason"])
        expected = (call.allowed, call.reason)
        what = f"{server.name}: AuthZEN {call.name} decision ({expected}; got {got})"
        bench._check(what, 1, int(got == expected))
    bench._check(
        f"{server.name}: AuthZEN decisions for the HTTP cross-check",
        len(MIX),
        _decisions(server) - before,
    )


def warm(bench: Bench, targets: list[Target], requests: int) -> None:
    if requests > 0:
        spec = LoadSpec(requests=requests, clients=CLIENTS, streams=1)
        run_load(targets, spec, bench.workdir / "warm")


def measure(
    bench: Bench, label: str, server: BenchProcess, targets: list[Target], sizes: Sizes
) -> dict[str, float]:
    """Like `Bench.direct`, over AuthZEN: throughput and CPU unpaced, latency paced."""
    result: dict[str, float] = {}
    for paced in (False, True):
        spec = LoadSpec(
            requests=sizes.paced if paced else sizes.unpaced,
            rate=sizes.rate if paced else None,
            clients=1 if paced else CLIENTS,  # paced: one connection per kind, as for gRPC
            streams=1,
            timeout=sizes.timeout,
        )
        decisions, cpu = _decisions(server), server.cpu_seconds()
        load = run_load(targets, spec, bench.workdir / "load")
        cpu = server.cpu_seconds() - cpu
        tag = f"{label} ({'paced' if paced else 'unpaced'})"
        bench._check_load(tag, load, spec, len(targets), expect_deny=set())
        bench._check(f"{tag}: server decisions", load.done, _decisions(server) - decisions)
        if paced:
            result.update(p50_ms=load.p50_ms, p99_ms=load.p99_ms, paced_rps=load.rps)
        else:
            result.update(rps=load.rps, unpaced_p50_ms=load.p50_ms, unpaced_p99_ms=load.p99_ms)
            result["server_cpu_us"] = cpu * 1e6 / load.done if load.done else float("nan")
    return result
