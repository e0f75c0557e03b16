"""bench/streaming.py's end-to-end step: raw events produced until both stores hold every
message, the four services as processes (traced or not), and the CPU each of them spent."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from streaming_kit import isolated, median

from mpp.config import Settings
from mpp.kafka.testing import drop_topics
from mpp.pipeline import STREAMING, Pipeline, log
from mpp.samples import chitchat_events
from mpp.stack import repo_root, stack_dir
from mpp.stack.jaeger import HOST as JAEGER_HOST
from mpp.stack.jaeger import OTLP_GRPC_PORT, JaegerServer

# The services' environment for the end-to-end runs with tracing on.
TRACING_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{JAEGER_HOST}:{OTLP_GRPC_PORT}",
    "OTEL_EXPORTER_OTLP_INSECURE": "true",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
}


def jaeger_answers() -> bool:
    import socket

    try:
        with socket.create_connection((JAEGER_HOST, OTLP_GRPC_PORT), timeout=2):
            return True
    except OSError:
        return False


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(group: int) -> float:
    """User and system CPU time of the live processes in process group ``group``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command name (in parentheses, which may hold spaces): state, ppid,
            # pgrp, ..., utime and stime are the 12th and 13th fields.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def cpu_of(pipeline: Pipeline, base: Settings) -> dict[str, float]:
    """CPU seconds used so far by each service of the run (its process group) and by the
    local Jaeger, when it runs."""
    groups = {name: process.owned_pid() for name, process in pipeline.processes.items()}
    groups["jaeger"] = JaegerServer(base, stack_dir(base), repo_root()).owned_pid()
    return {name: cpu_seconds(pid) for name, pid in groups.items() if pid is not None}


def end_to_end(
    base: Settings, n: int, extra_env: dict[str, str]
) -> tuple[float, str, dict[str, float]]:
    """Raw events produced until both stores hold every message, the four services as
    processes (``extra_env`` added to theirs); messages per second, the run's id, and the
    CPU seconds each service (and the local Jaeger) spent per 1,000 events meanwhile."""
    e2e_run = uuid.uuid4().hex[:8]
    e2e_settings = isolated(base, e2e_run)
    # Its own folder for the services' logs and pid files: never the managed services' one.
    home = Path(tempfile.mkdtemp(prefix="mpp-bench-"))
    pipeline = Pipeline(settings=e2e_settings, run_id=f"e{e2e_run}", home=home, extra_env=extra_env)
    e2e_raw = [
        json.dumps({**e, "user_id": f"e{e2e_run}-{e['user_id'][:12]}"}).encode()
        for e in chitchat_events(n)
    ]
    try:
        pipeline.start(*STREAMING)
        cpu_before = cpu_of(pipeline, base)
        started = time.perf_counter()
        pipeline.produce(e2e_raw, [None] * n)
        rate = n / (pipeline.wait_drained() - started)
        cpu = {
            name: (used - cpu_before[name]) * 1000 / n
            for name, used in cpu_of(pipeline, base).items()
            if name in cpu_before
        }
        log(
            f"end to end (raw topic -> Milvus and Neo4j){' traced' if extra_env else ''}: "
            f"{rate:,.0f}/s; milvus rows {pipeline.milvus_count()}, "
            f"graph {pipeline.graph_counts()}; CPU s per 1,000 events: "
            + ", ".join(f"{name} {used:.2f}" for name, used in cpu.items())
        )
        return rate, f"e{e2e_run}", cpu
    finally:
        pipeline.stop()
        pipeline.cleanup()
        drop_topics(e2e_settings.kafka)


def cpu_table(off: list[dict[str, float]], on: list[dict[str, float]]) -> str:
    """Median CPU seconds per 1,000 events of each process, tracing off and on."""
    names = [name for name in on[0] if all(name in run for run in off + on)]
    lines = [f"CPU s per 1,000 events (median)   {'off':>6} {'on':>6} {'extra':>6}"]
    for name in names:
        was = median([run[name] for run in off])
        now = median([run[name] for run in on])
        lines.append(f"  {name:32} {was:6.2f} {now:6.2f} {now - was:+6.2f}")
    return "\n".join(lines)
