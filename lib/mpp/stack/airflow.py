"""A local Airflow 3 for the batch DAG (``dags/``): ``mpp airflow up|down|status``.

Airflow runs from its own cached environment (``dags/requirements.txt``, built by
``mpp.stack.venvs`` exactly as ``mpp.stack.job_venvs`` does), with ``AIRFLOW_HOME`` at
``.stack/airflow`` and three detached processes there, each with a pid file and a log:
``api-server`` (UI, REST API and the tasks' execution API, one worker, on 127.0.0.1:18280),
``scheduler`` (LocalExecutor, parallelism 2) and ``dag-processor`` (parses the repo's
``dags/``). No triggerer: the DAG's operators do not defer. The metadata database is
``airflow`` in the stack's PostgreSQL, created and migrated on first ``up``. Login: the simple
auth manager's user ``admin``, with a password made once in ``.stack/airflow/admin-password``.
``up`` also sets the DAG's Variables and the ``kubernetes_default`` connection (the
kubeconfig that ``mpp cluster up`` writes) through the REST API; it is a quick no-op when all
of it is in place.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

from mpp.config import Settings
from mpp.stack import Stack, repo_root, stack_dir
from mpp.stack import venvs as shared_venvs
from mpp.stack.airflow_api import DAG_ID, KUBE_CONN_ID, VARIABLE_DEFAULTS, AirflowClient
from mpp.stack.base import Progress, Server, StackError, Status, port_open, start_time, tail

API_PORT = 18280
DATABASE = "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor")
READY_TIMEOUT_S = 300.0
MIGRATE_TIMEOUT_S = 900.0
DAG_PARSE_TIMEOUT_S = 180.0


def _private_file(path: Path, make: Callable[[], str]) -> str:
    """The content of a 0600 file, written once with ``make()`` when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(make())
    return path.read_text().strip()


class AirflowProcess(Server):
    """One Airflow component (``airflow <component>``), probed through the API's health."""

    stop_timeout_s = 60.0

    def __init__(self, component: str, airflow: Airflow) -> None:
        self.name = f"airflow-{component}"
        super().__init__(airflow.settings, airflow.stack_dir, airflow.repo_root)
        self.component = component
        self.airflow = airflow
        self.home = self.data_dir = airflow.home
        self.log_file = self.stdout_file = airflow.home / f"{component}.log"
        self.pid_file = airflow.home / f"{component}.pid"

    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.airflow.port)

    def endpoint(self) -> str:
        if self.component == "api-server":
            return self.airflow.api_url
        return "(health via the API)"

    def probe(self) -> str | None:
        try:
            response = httpx.get(f"{self.airflow.api_url}/api/v2/monitor/health", timeout=5)
            health = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"/api/v2/monitor/health: {exc!r}"
        if response.status_code != 200 or "metadatabase" not in health:
            return f"/api/v2/monitor/health answered {response.status_code}, not as Airflow"
        if self.component == "api-server":
            return None
        key = self.component.replace("-", "_")
        part = health.get(key) or {}
        if part.get("status") == "healthy":
            return None
        return f"{key} {part.get('status')} (last heartbeat {part.get(f'latest_{key}_heartbeat')})"

    def install(self, progress: Progress) -> None:
        self.airflow.ensure_venv(progress)

    def command(self) -> Sequence[str]:
        airflow = str(self.airflow.venv() / "bin" / "airflow")
        if self.component == "api-server":
            host, port = self.address()
            return [airflow, "api-server", "--host", host, "--port", str(port), "--workers", "1"]
        if self.component == "scheduler":
            # The api-server reads LocalExecutor's task logs from disk: no log server (it would
            # listen on every interface, port 8793).
            return [airflow, "scheduler", "--skip-serve-logs"]
        return [airflow, self.component]

    def environment(self) -> dict[str, str]:
        return self.airflow.environment()

    def launch(self, progress: Progress) -> subprocess.Popen[bytes] | None:
        if self.owned_pid() is not None:
            return None  # ours, running (wait_ready tells whether it answers)
        host, port = self.address()
        if port_open(host, port):
            problem = self.probe()
            if problem is None and not self.pid_file.exists():
                progress(f"{self.name}: reusing the one that answers on {self.airflow.api_url}")
                return None
            if self.component == "api-server":
                raise StackError(
                    f"{self.name}: port {port} is taken by something that is not our Airflow "
                    f"({problem or 'an api-server we did not start'}); stop it or pass --port"
                )
        self.install(progress)
        progress(f"{self.name}: starting (log: {self.log_file})")
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                list(self.command()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                env=self.environment(),
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid} {start_time(process.pid)}\n")
        if self.component == "api-server":
            (self.home / "api-server.port").write_text(f"{port}\n")
        return process


class Airflow(AirflowClient):
    """The local Airflow: ``up``, ``down``, ``status`` and a small REST client for tests."""

    def __init__(
        self,
        settings: Settings,
        port: int = API_PORT,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}"
        self.repo_root = repo_root()
        self.stack_dir = stack_dir(settings)
        self.home = self.stack_dir / "airflow"
        self.kubeconfig = self.stack_dir / "cluster" / "kubeconfig"
        self.variables = dict(variables or {})
        unknown = set(self.variables) - set(VARIABLE_DEFAULTS)
        if unknown:
            raise StackError(
                f"unknown Variable(s) {sorted(unknown)}; the DAG reads only "
                f"{', '.join(VARIABLE_DEFAULTS)}"
            )
        self.processes = [AirflowProcess(c, self) for c in COMPONENTS]

    # -- environment and configuration ------------------------------------------------------

    @property
    def password_file(self) -> Path:
        return self.home / "admin-password"

    def password(self) -> str:
        return _private_file(self.password_file, lambda: secrets.token_urlsafe(18))

    def requirements(self) -> Path:
        return self.repo_root / "dags" / "requirements.txt"

    def venv(self) -> Path:
        return shared_venvs.venv_path(
            self.settings.stack.cache_dir, "mpp-airflow", self.requirements(), sys.executable
        )

    def ensure_venv(self, progress: Progress) -> Path:
        """Airflow's environment, the one mpp.stack.job_venvs names "airflow"."""
        return shared_venvs.ensure_venv(
            self.settings.stack.cache_dir,
            "mpp-airflow",
            self.requirements(),
            lambda m: progress(f"airflow: {m}"),
            python=sys.executable,
        )

    def database_url(self) -> str:
        pg = self.settings.postgres
        auth = quote(pg.user, safe="")
        if pg.password is not None:
            auth += ":" + quote(pg.password.get_secret_value(), safe="")
        return f"postgresql+psycopg2://{auth}@{pg.host}:{pg.port}/{DATABASE}?sslmode={pg.sslmode}"

    def _secrets(self) -> dict[str, str]:
        def make() -> str:
            return json.dumps(
                {
                    "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                    "jwt_secret": secrets.token_urlsafe(64),
                    "api_secret_key": secrets.token_urlsafe(32),
                }
            )

        return dict(json.loads(_private_file(self.home / "secrets.json", make)))

    def environment(self) -> dict[str, str]:
        """What every airflow command runs with: all of its configuration is here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(key, None)
        keys = self._secrets()
        env["PATH"] = f"{self.venv() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.repo_root / "dags"),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                    self.home / "simple_auth_manager_passwords.json"
                ),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url(),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                # A failed task is retried after 20 s here, not 5 minutes (the DAG's default).
                "MPP_BATCH_RETRY_DELAY_S": "20",
            }
        )
        return env

    # -- up, down, status --------------------------------------------------------------------

    def up(self, progress: Progress) -> list[Status]:
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.ensure_venv(progress)
        Stack(self.settings, ("postgres",)).up(progress)
        self._ensure_database(progress)
        # The passwords file the simple auth manager reads: our one admin, our password.
        users = self.home / "simple_auth_manager_passwords.json"
        wanted = json.dumps({"admin": self.password()}) + "\n"
        if not users.exists() or users.read_text() != wanted:
            users.touch(mode=0o600)
            users.write_text(wanted)
        self._migrate(progress)
        port_file = self.home / "api-server.port"
        if self.processes[0].owned_pid() is not None and port_file.exists():
            running = int(port_file.read_text())
            if running != self.port:
                raise StackError(
                    f"airflow: ours already runs on port {running}, not {self.port}; use "
                    f"--port {running}, or `mpp airflow down` first"
                )
        launched = [p.launch(progress) for p in self.processes]
        deadline = time.monotonic() + READY_TIMEOUT_S
        for process, popen in zip(self.processes, launched, strict=True):
            if popen is not None:
                progress(f"{process.name}: waiting until it answers (up to {READY_TIMEOUT_S:.0f}s)")
            process.wait_ready(popen, deadline)
        for key, default in VARIABLE_DEFAULTS.items():
            self.ensure_variable(key, self.variables.get(key), default, progress)
        extra = {"kube_config_path": str(self.kubeconfig), "in_cluster": False}
        self.ensure_connection(KUBE_CONN_ID, "kubernetes", extra, progress)
        self.wait_for_dag(DAG_ID, DAG_PARSE_TIMEOUT_S, self.home / "dag-processor.log", progress)
        progress(f"airflow: ready on {self.api_url} in {time.monotonic() - started:.1f}s")
        return self.status()

    def down(self, progress: Progress) -> list[str]:
        return [p.name for p in reversed(self.processes) if p.stop(progress)]

    def status(self) -> list[Status]:
        return [p.status() for p in self.processes]

    def _ensure_database(self, progress: Progress) -> None:
        pg = self.settings.postgres
        with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                return
            progress(f"airflow: creating the database {DATABASE} in PostgreSQL {pg.host}:{pg.port}")
            try:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            except psycopg.errors.InsufficientPrivilege as exc:
                raise StackError(
                    f"airflow: user {pg.user} may not create databases; create {DATABASE!r} "
                    f"owned by {pg.user} (CREATE DATABASE {DATABASE} OWNER {pg.user})"
                ) from exc

    def _db_revision(self) -> str | None:
        pg = self.settings.postgres
        with (
            psycopg.connect(pg.conninfo(DATABASE)) as conn,
            contextlib.suppress(psycopg.errors.UndefinedTable),
        ):
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return str(row[0]) if row else None
        return None

    def _migrate(self, progress: Progress) -> None:
        """``airflow db migrate``, skipped when this environment already migrated the DB."""
        marker = self.home / "migrated"
        if marker.exists() and marker.read_text().split() == [
            self.venv().name,
            str(self._db_revision()),
        ]:
            return
        log = self.home / "db-migrate.log"
        progress(f"airflow: airflow db migrate (first start: a minute or two; log: {log})")
        with log.open("ab") as out:
            try:
                result = subprocess.run(
                    [str(self.venv() / "bin" / "airflow"), "db", "migrate"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.home,
                    env=self.environment(),
                    timeout=MIGRATE_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise StackError(
                    f"airflow db migrate did not finish in {MIGRATE_TIMEOUT_S:.0f}s; see "
                    f"{log}:\n{tail(log)}"
                ) from exc
        if result.returncode != 0:
            raise StackError(
                f"airflow db migrate failed (exit {result.returncode}); see {log}:\n{tail(log)}"
            )
        marker.write_text(f"{self.venv().name} {self._db_revision()}\n")
