"""
Throughput of the AhaChat sandbox: requests per second for a user lookup and for adding tags.

The sandbox runs as a child process (its own interpreter and GIL); this process is the client, in
two forms:

- ``asyncio``: a minimal HTTP/1.1 client on keep-alive connections, light enough that the sandbox
  is the bottleneck;
- ``requests``: threads, each with its own pooled ``requests.Session``, as the provider's client
  talks to AhaChat.

Each figure is also given as a ratio to a baseline measured in the same run with the same client:
``GET /_sandbox/health``, a route that touches neither the knobs, the request log nor the state.
Every scenario is bounded in requests and in time, and targets only the sandbox on loopback.

Run: ``uv run python benchmarks/sandbox_throughput.py [--duration 3] [--strict]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import requests

from airflow_provider_ahachat.sandbox import SandboxProcess

USER_ID = "3824547807572463"


@dataclass
class Scenario:
    """One kind of request."""

    name: str
    method: str
    path: str
    body: bytes = b""

    def raw(self, host: str, port: int) -> bytes:
        """The request as bytes on the wire."""
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if self.method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
        return head.encode() + b"\r\n" + self.body


@dataclass
class Result:
    """What one client measured for one scenario."""

    client: str
    scenario: str
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


# --------------------------------------------------------------------------- asyncio client


async def _asyncio_worker(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    budget: itertools.count[int],
    limit: int,
    result: Result,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and next(budget) < limit:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
            if status != 200:
                result.failures += 1
    finally:
        writer.close()


async def _asyncio_run(
    host: str, port: int, scenario: Scenario, connections: int, duration: float, limit: int
) -> Result:
    result = Result("asyncio", scenario.name)
    request = scenario.raw(host, port)
    budget = itertools.count()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(_asyncio_worker(host, port, request, deadline, budget, limit, result) for _ in range(connections))
    )
    result.seconds = time.perf_counter() - started
    return result


def _run_coroutine(coroutine: Coroutine[Any, Any, Result]) -> Result:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)  # pragma: no cover


def asyncio_client(
    host: str, port: int, scenario: Scenario, connections: int, duration: float, limit: int
) -> Result:
    """Measure ``scenario`` with the asyncio client."""
    return _run_coroutine(_asyncio_run(host, port, scenario, connections, duration, limit))


# --------------------------------------------------------------------------- requests client


def requests_client(url: str, scenario: Scenario, threads: int, duration: float, limit: int) -> Result:
    """Measure ``scenario`` with threads, each with its own ``requests.Session``."""
    result = Result("requests", scenario.name)
    budget = itertools.count()
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + duration

    def work() -> None:
        latencies: list[float] = []
        failures = 0
        with requests.Session() as session:
            session.trust_env = False
            session.headers["Content-Type"] = "application/json"
            target = url + scenario.path
            while time.perf_counter() < deadline and next(budget) < limit:
                began = time.perf_counter()
                response = session.request(scenario.method, target, data=scenario.body or None, timeout=10)
                latencies.append(time.perf_counter() - began)
                failures += response.status_code != 200
        with lock:
            result.latencies.extend(latencies)
            result.failures += failures

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result.seconds = time.perf_counter() - started
    result.requests = len(result.latencies)
    return result


# --------------------------------------------------------------------------- main


def _row(client: str, scenario: str, *figures: str) -> str:
    widths = (9, 9, 9, 8, 8, 6)
    return f"{client:<34}{scenario:<32}" + "".join(
        f"{text:>{width}}" for text, width in zip(figures, widths, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=3.0, help="seconds per scenario and client (max 30)"
    )
    parser.add_argument("--max-requests", type=int, default=30_000, help="requests per scenario and client")
    parser.add_argument("--connections", type=int, default=16, help="connections of the asyncio client")
    parser.add_argument("--threads", type=int, default=4, help="threads of the requests client")
    parser.add_argument("--target", type=float, default=1000.0, help="requests per second to reach")
    parser.add_argument("--strict", action="store_true", help="exit 1 if an API scenario is under --target")
    args = parser.parse_args(argv)
    duration = min(max(args.duration, 0.1), 30.0)

    with SandboxProcess(log_level="warning") as sandbox:
        token = sandbox.token
        base = f"/api/bots/{sandbox.bot_id}/users/{USER_ID}"
        scenarios = [
            Scenario("baseline GET /_sandbox/health", "GET", "/_sandbox/health"),
            Scenario("GET user", "GET", f"{base}?ahachat_token={token}"),
            Scenario(
                "POST tags",
                "POST",
                f"{base}/tags?ahachat_token={token}",
                json.dumps({"tags": ["bench"]}).encode(),
            ),
        ]
        print(
            f"sandbox pid {sandbox.pid} at {sandbox.url}; python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; {duration:g} s or {args.max_requests} requests per figure"
        )
        clients: list[tuple[str, Callable[[Scenario], Result]]] = [
            (
                f"asyncio, {args.connections} connections",
                lambda s: asyncio_client(
                    sandbox.host, sandbox.port, s, args.connections, duration, args.max_requests
                ),
            ),
            (
                f"requests.Session, {args.threads} threads",
                lambda s: requests_client(sandbox.url, s, args.threads, duration, args.max_requests),
            ),
        ]
        below = False
        print()
        print(_row("client", "scenario", "requests", "req/s", "vs base", "p50 ms", "p99 ms", "fail"))
        for label, run in clients:
            baseline = 0.0
            for scenario in scenarios:
                sandbox.reset()
                result = run(scenario)
                is_api = scenario.path.startswith("/api/")
                counted = sandbox.stats()["total"]
                if is_api and counted != result.requests:
                    print(f"warning: the sandbox counted {counted} requests, the client {result.requests}")
                baseline = baseline or result.rate
                print(
                    _row(
                        label,
                        scenario.name,
                        str(result.requests),
                        f"{result.rate:.0f}",
                        f"{result.rate / baseline:.2f}",
                        f"{result.percentile(0.5):.2f}",
                        f"{result.percentile(0.99):.2f}",
                        str(result.failures),
                    )
                )
                if is_api and (result.rate < args.target or result.failures):
                    below = True
        sandbox.reset()
    verdict = "below" if below else "at or above"
    print(f"\nAPI scenarios {verdict} the target of {args.target:.0f} requests per second with no failure.")
    return 1 if below and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
