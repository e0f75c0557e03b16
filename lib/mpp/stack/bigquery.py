"""A BigQuery API emulator (bqemulator from PyPI) on loopback, for the analytics warehouse.

bqemulator pins grpcio-tools below what the project uses, so it runs from a virtualenv of its
own under the stack cache (``~/.cache/mpp/venvs/bqemulator-<hash>``), keyed by the pinned
``stack/bigquery/requirements.txt``: built once with uv, reused by every clone. DuckDB's
spatial extension, which the emulator loads at start, comes from PyPI
(``duckdb-extension-spatial``) and is installed into DuckDB's extension folder inside that
virtualenv (the emulator runs with HOME pointing there), so nothing is downloaded at start.

The REST API listens on ``MPP_WAREHOUSE__BIGQUERY_ENDPOINT`` (http://127.0.0.1:19050 when
unset), its gRPC API on the next port up by 10; data under ``.stack/bigquery/data``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from mpp.config import host_port
from mpp.stack.base import Progress, Server, StackError, run_checked

DEFAULT_ENDPOINT = "http://127.0.0.1:19050"
UV_VERSION = "0.13.8"
# Imports the spatial extension that the duckdb-extension-spatial wheel ships into DuckDB.
_INSTALL_SPATIAL = (
    "import duckdb; from duckdb_extensions import import_extension; "
    "con = duckdb.connect(); import_extension('spatial', con=con); con.execute('LOAD spatial')"
)


class BigQueryServer(Server):
    name = "bigquery"
    default_port = 19050

    def endpoint_url(self) -> str:
        return self.settings.warehouse.bigquery_endpoint or DEFAULT_ENDPOINT

    def address(self) -> tuple[str, int]:
        return host_port(self.endpoint_url(), self.default_port)

    def requirements(self) -> Path:
        return self.repo_root / "stack" / "bigquery" / "requirements.txt"

    def venv(self) -> Path:
        digest = hashlib.sha256(self.requirements().read_bytes()).hexdigest()[:16]
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.cache_dir / "venvs" / f"bqemulator-{digest}-py{version}"

    def probe(self) -> str | None:
        # A real API call: list the datasets of the configured project.
        project = self.settings.warehouse.bigquery_project
        host, port = self.address()
        url = f"http://{host}:{port}/bigquery/v2/projects/{project}/datasets"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return f"datasets.list answered {exc.code}"
        except (OSError, ValueError) as exc:
            return str(exc)
        if body.get("kind") != "bigquery#datasetList":
            return f"datasets.list answered {str(body)[:100]}"
        return None

    def _uv(self) -> str:
        pinned = self.cache_dir / "tools" / f"uv-{UV_VERSION}" / "bin" / "uv"
        if pinned.exists():
            return str(pinned)
        found = shutil.which("uv")
        if found is None:
            raise StackError(
                "bigquery: uv not found; run scripts/bootstrap.sh (it installs the pinned uv)"
            )
        return found

    def install(self, progress: Progress) -> None:
        venv = self.venv()
        if (venv / ".complete").exists():
            return
        venv.parent.mkdir(parents=True, exist_ok=True)
        # Two test sessions may start the stack at once: one builds, the other waits.
        with (venv.parent / f"{venv.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (venv / ".complete").exists():
                self._build(venv, progress)

    def _build(self, venv: Path, progress: Progress) -> None:
        progress(f"bigquery: building the emulator's environment {venv} (once per machine)")
        if venv.exists():
            shutil.rmtree(venv)
        uv = self._uv()
        run_checked([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], "uv venv")
        python = str(venv / "bin" / "python")
        run_checked(
            [uv, "pip", "install", "--quiet", "--python", python, "-r", str(self.requirements())],
            "uv pip install (bigquery emulator)",
        )
        run_checked([python, "-c", _INSTALL_SPATIAL], "duckdb spatial install", env=self._env())
        (venv / ".complete").write_text("ok\n")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # DuckDB keeps extensions under $HOME/.duckdb: this virtualenv's own.
        home = self.venv() / "home"
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
        # Avro/Parquet/ORC loads need extensions from the network; we load JSON only.
        env["BQEMU_ENABLE_FORMAT_EXTENSIONS"] = "false"
        return env

    def environment(self) -> dict[str, str]:
        return self._env()

    def command(self) -> Sequence[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, port = self.address()
        return [
            str(self.venv() / "bin" / "bqemulator"),
            "start",
            "--rest-host",
            host,
            "--rest-port",
            str(port),
            "--grpc-host",
            host,
            "--grpc-port",
            str(port + 10),
            "--data-dir",
            str(self.data_dir.resolve()),
            "--project",
            self.settings.warehouse.bigquery_project,
            "--log-level",
            "warning",
            "--log-format",
            "json",
        ]
