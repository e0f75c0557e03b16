"""A peer for the recommender's cache-hit path: Feast's feature server serving precomputed
recommendations from the local stack's Redis, for the same users, over its HTTP API (#17).

    flock /tmp/mpp-servers.lock .venv/bin/python bench/feast_peer.py [--users 5] [--requests 200]

Needs Redis of the local stack (started here if it does not answer). Feast (PyPI ``feast``,
pinned in bench/feast-requirements.txt) lives in a virtualenv of its own under the stack cache
(``~/.cache/mpp/venvs/feast-<hash>-py3.11``, built once with the pinned uv, like the BigQuery
emulator's): it is large and only this bench needs it, so it is not in uv.lock.

``feast_peer(settings, recommendations, workdir)`` writes a feature repository in ``workdir``
(``feature_store.yaml``: the online store is the same Redis, the registry a file there, the
project ``mpp_feast_peer_<run>``), registers the entity ``user`` and the feature view
``recommendations`` and writes each user's list to the online store (bench/feast_repo.py, in
Feast's virtualenv), then starts ``feast serve`` on a free loopback port and waits until it
answers. On exit it stops the server and deletes the run's keys from Redis.

Feast's Redis keys are the serialized entity key followed by the project name (binary, never
``mpp:...``), so they cannot collide with the recommender's keys; the run's own project name
makes them easy to find and delete.

The server runs with one worker by default, to compare like for like with the recommender's
one process (``workers`` chooses more), with its access log off and with gunicorn's
``--max-requests 0``: Feast's default restarts each worker after about 1,000 requests, which a
load test would measure as stalls. The load generator of bench/recommender.py POSTs
``FeastPeer.body(user)`` to ``FeastPeer.url``; ``FeastPeer.NONEMPTY`` is a byte string found in
an answer exactly when it holds a non-empty list.

The ``__main__`` is a self-check: ``--users`` users with made-up lists from the default
catalog, one POST each checked against what was written (a few printed), an unknown user that
must come back empty, then the latency of ``--requests`` sequential POSTs (p50/p99) beside as
many bare Redis GETs of the same answers' bytes, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import httpx

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.config.stores import RedisSettings
from mpp.pipeline import free_port, log
from mpp.stack import Stack
from mpp.stack.base import Progress
from mpp.stack.venvs import ensure_venv, venv_path
from mpp.stores import redis_client

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "feast-requirements.txt"
VIEW = "recommendations"  # bench/feast_repo.py's feature view
FEATURES = [f"{VIEW}:campaign_ids", f"{VIEW}:scores"]
READY_TIMEOUT_S = 120.0

Recommendations = dict[str, list[tuple[str, float]]]


def feast_venv(settings: Settings, progress: Progress = log) -> Path:
    """Feast's virtualenv, built first (a few minutes on a cold uv cache) if missing."""
    cache = settings.stack.cache_dir
    venv = venv_path(cache, "feast", REQUIREMENTS, sys.executable)
    if (venv / ".complete").exists():
        return venv
    started = time.monotonic()
    progress(f"feast: installing {REQUIREMENTS.name} into {venv}")
    ensure_venv(cache, "feast", REQUIREMENTS, lambda m: progress(f"feast: {m}"))
    progress(f"feast: environment ready in {time.monotonic() - started:.1f} s")
    return venv


def connection_string(redis: RedisSettings) -> str:
    """Feast's ``host:port,key=value,...`` form of ``redis`` (its keys are redis-py's)."""
    parts = urlsplit(redis.url)
    if parts.scheme == "unix":
        raise ValueError(f"redis.url={redis.url!r}: Feast's Redis store needs host:port")
    params: dict[str, str] = {"db": parts.path.strip("/") or "0"}
    if parts.username:
        params["username"] = unquote(parts.username)
    password = (
        redis.password.get_secret_value() if redis.password else unquote(parts.password or "")
    )
    if password:
        params["password"] = password
    if redis.tls:
        params.update(ssl="true", ssl_cert_reqs="required", ssl_check_hostname="true")
        files = {
            "ssl_ca_certs": redis.ssl_ca_file,
            "ssl_certfile": redis.ssl_cert_file,
            "ssl_keyfile": redis.ssl_key_file,
        }
        params.update({k: str(v) for k, v in files.items() if v is not None})
    for key, value in params.items():
        if "," in value or "=" in value:
            # Feast splits the string on "," and each pair on its first "=".
            raise ValueError(f"redis {key} holds ',' or '=', which Feast cannot take")
    host = parts.hostname or "127.0.0.1"
    return ",".join([f"{host}:{parts.port or 6379}", *(f"{k}={v}" for k, v in params.items())])


def write_repo(workdir: Path, project: str, redis: RedisSettings, rows: Recommendations) -> None:
    config = {
        "project": project,
        "provider": "local",
        "registry": str(workdir / "registry.db"),
        "online_store": {"type": "redis", "connection_string": connection_string(redis)},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    # JSON is YAML: no quoting rules to get wrong for passwords or paths.
    (workdir / "feature_store.yaml").write_text(json.dumps(config, indent=2) + "\n")
    (workdir / "rows.json").write_text(
        json.dumps({u: [list(r) for r in v] for u, v in rows.items()})
    )


@dataclass(frozen=True)
class FeastPeer:
    """A running ``feast serve``: POST ``body(user)`` to ``url``, with ``HEADERS`` (FastAPI
    answers 422 to a body without ``Content-Type: application/json``), for that user's list."""

    HEADERS: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}
    # In every answer that holds a non-empty list for the user: Feast's compact JSON opens
    # ``campaign_ids``' value with it; an unknown user gets ``"values":[null]``, an empty
    # list ``"values":[[]]`` (the entity's own ``"values":["<id>"]`` never matches).
    NONEMPTY: ClassVar[bytes] = b'"values":[["'

    url: str
    base: str
    project: str
    workers: int
    pid: int

    def body(self, user_id: str) -> bytes:
        request = {"features": FEATURES, "entities": {"user_id": [user_id]}}
        return json.dumps(request, separators=(",", ":")).encode()

    def nonempty(self, answer: bytes) -> bool:
        return self.NONEMPTY in answer

    @staticmethod
    def recommendations(answer: bytes) -> list[tuple[str, float]]:
        """The (campaign id, score) list of a one-user answer; [] when Feast has no row."""
        body = json.loads(answer)
        names = body["metadata"]["feature_names"]
        values = {n: r["values"][0] for n, r in zip(names, body["results"], strict=True)}
        ids, scores = values["campaign_ids"], values["scores"]
        if ids is None or scores is None:
            return []
        return list(zip(ids, (float(s) for s in scores), strict=True))


def run_in_venv(venv: Path, argv: list[str], what: str) -> None:
    env = {**os.environ, "FEAST_USAGE": "False"}
    done = subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(process: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not answers(f"{base}/health"):
        if process.poll() is not None:
            raise RuntimeError(
                f"feast serve exited {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"feast serve did not answer in {READY_TIMEOUT_S:.0f} s; see {log_path}"
            )
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (gunicorn's arbiter and its workers), SIGKILL
    after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def delete_keys(settings: Settings, project: str) -> int:
    """Deletes every key of ``project`` (Feast's keys end with the project name)."""
    client = redis_client(settings)
    keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()
    return len(keys)


def count_keys(settings: Settings, project: str) -> int:
    client = redis_client(settings)
    count = sum(1 for _ in client.scan_iter(match=f"*{project}".encode(), count=1000))
    client.close()
    return count


@contextmanager
def feast_peer(
    settings: Settings,
    recommendations: Recommendations,
    workdir: Path,
    workers: int = 1,
    progress: Progress = log,
) -> Iterator[FeastPeer]:
    """Feast's feature server on ``settings.redis`` serving ``recommendations`` (each user's
    ``(campaign_id, score)`` list, in order) until the block exits. ``workdir`` must exist;
    the feature repository, the registry and the server's log (``feast-serve.log``) go there."""
    venv = feast_venv(settings, progress)
    project = f"mpp_feast_peer_{uuid.uuid4().hex[:8]}"
    write_repo(workdir, project, settings.redis, recommendations)
    process: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        run_in_venv(
            venv, ["python", str(HERE / "feast_repo.py"), str(workdir)], "feast apply + write"
        )
        progress(
            f"feast: {len(recommendations)} users written to Redis (project {project}) "
            f"in {time.monotonic() - started:.1f} s"
        )
        port = free_port()
        log_path = workdir / "feast-serve.log"
        argv = [
            str(venv / "bin" / "feast"),
            *("--chdir", str(workdir), "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(workers), "--no-access-log", "--max-requests", "0"),
        ]
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                argv,
                env={**os.environ, "FEAST_USAGE": "False"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        wait_ready(process, base, log_path)
        progress(
            f"feast: serve ready at {base} ({workers} worker(s)) in "
            f"{time.monotonic() - started:.1f} s"
        )
        yield FeastPeer(f"{base}/get-online-features", base, project, workers, process.pid)
    finally:
        if process is not None:
            stop(process)
        deleted = delete_keys(settings, project)
        progress(f"feast: server stopped, {deleted} keys of {project} deleted from Redis")


def made_up(users: int, seed: int = 17) -> Recommendations:
    """``users`` users, each with 10 campaigns of the default catalog and falling scores."""
    campaigns = [c.campaign_id for c in parse_campaigns(default_campaigns_path())]
    rng = random.Random(seed)
    out: Recommendations = {}
    for i in range(users):
        chosen = rng.sample(campaigns, min(10, len(campaigns)))
        scores = sorted((rng.random() for _ in chosen), reverse=True)
        out[f"feast-peer-u{i}"] = list(zip(chosen, scores, strict=True))
    return out


def quantiles_ms(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"


def timed(call: Callable[[int], object], count: int) -> list[float]:
    """Seconds each of ``count`` sequential ``call(i)`` took."""
    out: list[float] = []
    for i in range(count):
        sent = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - sent)
    return out


def self_check(settings: Settings, peer: FeastPeer, rows: Recommendations, args: Any) -> int:
    """One POST per user (checked against what was written; ``--show`` of them printed), an
    unknown user (must not match ``NONEMPTY``), then ``--requests`` sequential POSTs beside as
    many bare Redis GETs of the same answers' bytes, in this run."""
    print(f"feast {peer.url} project {peer.project}: {count_keys(settings, peer.project)} keys")
    users = list(rows)
    answers_of: dict[str, bytes] = {}
    wrong: list[str] = []
    with httpx.Client(timeout=5) as client:

        def post(user: str) -> bytes:
            answer = client.post(peer.url, content=peer.body(user), headers=peer.HEADERS)
            answer.raise_for_status()
            return answer.content

        for n, user in enumerate(users):
            answers_of[user] = post(user)
            got = peer.recommendations(answers_of[user])
            if got != rows[user] or not peer.nonempty(answers_of[user]):
                wrong.append(f"{user}: wrote {rows[user]}, got {got}")
            if n < args.show:
                print(f"POST {peer.body(user).decode()}\n  -> {answers_of[user].decode()}")
        unknown = post(f"no-such-user-{peer.project}")
        if peer.nonempty(unknown) or peer.recommendations(unknown):
            wrong.append(f"unknown user answered as found: {unknown.decode()}")
        http = timed(lambda i: post(users[i % len(users)]), args.requests)
    redis = redis_client(settings)
    bare = {u: f"mpp-feast-peer-bare:{u}:{peer.project}" for u in users}  # deleted on exit
    redis.mset({bare[u]: answers_of[u] for u in users})
    gets = timed(lambda i: redis.get(bare[users[i % len(users)]]), args.requests)
    redis.close()
    size = statistics.mean(len(a) for a in answers_of.values())
    print(f"{args.requests} sequential requests over {len(users)} users, answers ~{size:.0f} B:")
    print(f"  feast serve POST /get-online-features (httpx, keep-alive): {quantiles_ms(http)}")
    print(f"  bare Redis GET of the same bytes (redis-py):             {quantiles_ms(gets)}")
    if wrong:
        print(f"{len(wrong)} wrong answers:", *wrong[:5], sep="\n")
        return 1
    print(f"all {len(users)} answers equal what was written; the unknown user's is empty")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--show", type=int, default=3, help="answers to print")
    parser.add_argument("--requests", type=int, default=200, help="timed sequential requests")
    args = parser.parse_args()
    settings = Settings()
    Stack(settings, only=("redis",)).up(lambda m: None)
    rows = made_up(args.users)
    with (
        tempfile.TemporaryDirectory(prefix="feast-peer-") as tmp,
        feast_peer(settings, rows, Path(tmp), workers=args.workers) as peer,
    ):
        return self_check(settings, peer, rows, args)


if __name__ == "__main__":
    sys.exit(main())
