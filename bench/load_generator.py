"""The benches' closed-loop load generator (bench/loadgen, in Go), from Python: built once per
version of its sources and cached, run over a list of requests, and its trivial server, which
measures the generator's own ceiling.

Why Go: a Python client on asyncio costs about as much CPU per request as the service it
measures, so on two cores it measured itself. ``binary()`` builds the program into
``$MPP_CACHE_DIR/bench/loadgen-<hash of its sources, go.mod and go.sum>`` (``~/.cache/mpp``;
modules from the Go module proxy into ``$MPP_CACHE_DIR/go``) the first time, and reuses it
after. ``run`` writes the requests file, runs the generator and returns what it printed (see
bench/loadgen/main.go for its flags and output); ``Figures`` makes a table row of it, or of
latencies a Python client measured (the bare store baselines), with the same percentiles.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpp.pipeline import log
from mpp.stack.base import cache_dir

SOURCE = Path(__file__).resolve().parent / "loadgen"
TABLE_HEAD = (
    "| what | concurrency | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | requests/s "
    "| requests | errors | hit rate |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def source_hash() -> str:
    """The hash of what the binary is built from: every .go file, go.mod and go.sum."""
    digest = hashlib.sha256()
    files = sorted([*SOURCE.glob("*.go"), SOURCE / "go.mod", SOURCE / "go.sum"])
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def binary(progress: Callable[[str], None] = log) -> Path:
    """The built generator: cached, else built now (the first build downloads gRPC's modules
    and compiles them: about a minute on two cores)."""
    path = cache_dir() / "bench" / f"loadgen-{source_hash()}"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    go = cache_dir() / "go"
    env = dict(
        os.environ,
        GOMODCACHE=str(go / "mod"),
        GOCACHE=str(go / "build"),
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
        GOWORK="off",
        CGO_ENABLED="0",
    )
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    progress(f"loadgen: building {path} (Go; first time only)")
    started = time.monotonic()
    command = ["go", "build", "-v", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."]
    process = subprocess.Popen(
        command, cwd=SOURCE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line.rstrip())
        # Module downloads one by one; packages compiled, every 20th.
        if line.startswith("go: ") or len(lines) % 20 == 0:
            progress(f"loadgen: {line.rstrip()} ({time.monotonic() - started:.0f} s)")
    if process.wait() != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError("building bench/loadgen failed:\n" + "\n".join(lines[-30:]))
    partial.replace(path)
    progress(f"loadgen: built in {time.monotonic() - started:.1f} s")
    return path


@dataclass(frozen=True)
class Request:
    """One request: the HTTP path and query (or the gRPC method's full name) and its body
    (HTTP: sent with POST; gRPC: the serialized request message)."""

    path: str
    body: bytes = b""

    def line(self) -> str:
        return json.dumps({"path": self.path, "body": base64.b64encode(self.body).decode()})


def run(
    requests: Sequence[Request],
    proto: str,
    target: str,
    concurrency: int,
    seconds: float,
    *options: str,
) -> dict[str, Any]:
    """The generator's figures for ``requests`` sent to ``target`` (``http://host:port`` or,
    for gRPC, ``host:port``) by ``concurrency`` workers for ``seconds``; ``options`` are more
    of its flags (``-once``, ``-header``, ``-hit-bytes``, ...)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", prefix="loadgen-") as file:
        file.write("\n".join(r.line() for r in requests) + "\n")
        file.flush()
        command = [str(binary()), "run", f"-proto={proto}", f"-target={target}"]
        command += [f"-requests={file.name}", f"-concurrency={concurrency}"]
        command += [f"-seconds={seconds}", *options]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed (exit {done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@contextmanager
def trivial_server(*options: str) -> Iterator[tuple[str, str]]:
    """The generator's trivial servers (a fixed small answer to anything): the HTTP base URL
    and the gRPC target. By default its HTTP answer holds ``"cached":true``, its gRPC answer
    is a RecommendResponse with one item and ``cached`` (field 4) set; ``options``:
    ``-http-body=...``, ``-grpc-body=<base64>``."""
    process = subprocess.Popen(
        [str(binary()), "serve-trivial", *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        ports = json.loads(process.stdout.readline())
        yield f"http://127.0.0.1:{ports['http']}", f"127.0.0.1:{ports['grpc']}"
    finally:
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def busy_cores(processes: int | None = None) -> Iterator[int]:
    """A loaded machine: one process per core (``processes`` if given) spinning at normal
    priority until the block ends; yields how many."""
    count = processes or os.cpu_count() or 1
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield count
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of sorted values (as the generator computes it)."""
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Figures:
    """One table row: latency percentiles (ms), answers per second, counts, hit rate."""

    name: str
    concurrency: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    rps: float
    requests: int
    errors: int
    hit_rate: float | None = None

    @classmethod
    def of_run(cls, name: str, result: dict[str, Any]) -> Figures:
        """The row of the generator's output; errors print with their kinds on stderr."""
        if result["error_count"]:
            log(f"{name}: errors {result['errors']}; e.g. {result.get('error_samples')}")
        latency = {k: math.nan if v is None else v for k, v in result["latency_ms"].items()}
        return cls(
            name,
            result["concurrency"],
            latency["p50"],
            latency["p90"],
            latency["p99"],
            latency["p99.9"],
            latency["max"],
            result["rps"],
            result["requests"],
            result["error_count"],
            result["hit_rate"],
        )

    @classmethod
    def of_latencies(
        cls, name: str, concurrency: int, latencies: list[float], seconds: float
    ) -> Figures:
        """The row of a Python client's latencies (seconds), all successful."""
        ordered = sorted(x * 1000 for x in latencies)
        p50, p90, p99, p999, top = (nearest_rank(ordered, q) for q in (0.5, 0.9, 0.99, 0.999, 1))
        rate = len(ordered) / seconds if seconds else 0.0
        return cls(name, concurrency, p50, p90, p99, p999, top, rate, len(ordered), 0)

    def row(self) -> str:
        hits = "" if self.hit_rate is None else f"{self.hit_rate:.3f}"
        return (
            f"| {self.name} | {self.concurrency} | {self.p50:.2f} | {self.p90:.2f} "
            f"| {self.p99:.2f} | {self.p999:.2f} | {self.max:.2f} | {self.rps:,.0f} "
            f"| {self.requests} | {self.errors} | {hits} |"
        )
