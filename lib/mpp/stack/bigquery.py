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

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from mpp.config import host_port
from mpp.stack.base import Progress, Server, run_checked
from mpp.stack.venvs import ensure_venv, venv_path

DEFAULT_ENDPOINT = "http://127.0.0.1:19050"
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
        return venv_path(self.cache_dir, "bqemulator", self.requirements(), sys.executable)

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

    def install(self, progress: Progress) -> None:
        def install_spatial(venv: Path) -> None:
            python = str(venv / "bin" / "python")
            run_checked([python, "-c", _INSTALL_SPATIAL], "duckdb spatial install", env=self._env())

        ensure_venv(
            self.cache_dir,
            "bqemulator",
            self.requirements(),
            lambda m: progress(f"bigquery: {m}"),
            after=install_spatial,
        )

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
