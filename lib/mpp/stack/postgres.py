"""PostgreSQL from Debian's packages, one cluster under the stack folder."""

from __future__ import annotations

import glob
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path

import psycopg

from mpp.config import host_port
from mpp.db import migrate
from mpp.stack.base import Progress, Server, StackError, run_checked, running_as_root


def _pg_bin(program: str) -> str | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)
    if candidates:
        return candidates[0]
    return shutil.which(program)


class PostgresServer(Server):
    name = "postgres"
    default_port = 15432
    # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def address(self) -> tuple[str, int]:
        pg = self.settings.postgres
        return host_port(f"{pg.host}:{pg.port}", self.default_port)

    def probe(self) -> str | None:
        try:
            with psycopg.connect(self.settings.postgres.conninfo("postgres"), connect_timeout=2):
                return None
        except psycopg.OperationalError as exc:
            # Up but our database is not there yet counts as up: after_ready creates it.
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            return message

    def missing_packages(self) -> list[str]:
        return [] if _pg_bin("initdb") and _pg_bin("postgres") else ["postgresql"]

    def install(self, progress: Progress) -> None:
        if self.missing_packages():
            raise StackError("postgres: initdb and postgres not found; apt-get install postgresql")

    def run_as(self) -> str | None:
        return "postgres" if running_as_root() else None

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    def prepare(self, progress: Progress) -> None:
        initdb = _pg_bin("initdb")
        if initdb is None:
            raise StackError("postgres: initdb not found after installing postgresql")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        owner = self.run_as()
        if owner:
            shutil.chown(self.home, owner, owner)
            shutil.chown(self.socket_dir, owner, owner)
            if self.log_file.exists():
                shutil.chown(self.log_file, owner, owner)
        if (self.data_dir / "PG_VERSION").exists():
            return
        progress("postgres: initdb (first start only)")
        pg = self.settings.postgres
        argv = [
            initdb,
            "-D",
            str(self.data_dir),
            "-U",
            pg.user,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        pwfile = self.home / "initdb.pw"
        if pg.password is not None:
            pwfile.write_text(pg.password.get_secret_value())
            argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            argv += ["--auth=trust"]
        if owner:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            shutil.chown(self.data_dir, owner, owner)
            if pwfile.exists():
                shutil.chown(pwfile, owner, owner)
            argv = ["setpriv", f"--reuid={owner}", f"--regid={owner}", "--init-groups", *argv]
        try:
            run_checked(argv, "postgres: initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def command(self) -> Sequence[str]:
        postgres = _pg_bin("postgres")
        if postgres is None:
            raise StackError("postgres: the postgres binary was not found")
        host, port = self.address()
        return [
            postgres,
            "-D",
            str(self.data_dir.resolve()),
            "-c",
            f"listen_addresses={host}",
            "-p",
            str(port),
            "-k",
            str(self.socket_dir.resolve()),
            # Local stack: durability of the last few ms is not worth the fsyncs on a laptop.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "max_connections=200",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PGDATA", None)
        return env

    def after_ready(self, progress: Progress) -> None:
        pg = self.settings.postgres
        with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,)
            ).fetchone()
            if not exists:
                progress(f"postgres: creating database {pg.database}")
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(
                        psycopg.sql.Identifier(pg.database)
                    )
                )
        applied = migrate(pg.conninfo())
        if applied:
            progress(f"postgres: applied migrations {', '.join(applied)}")
