"""Neo4j Community, embedded DBMS with the Bolt connector, from Maven Central's jars.

stack/neo4j holds a small launcher (Neo4jLauncher.java) and its pom; install.sh builds both
into ~/.cache/mpp/neo4j/<hash>. Authentication is off unless MPP_NEO4J__PASSWORD is set, in
which case it becomes the initial password of the ``neo4j`` user. See stack/neo4j/NOTES.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import neo4j
from neo4j.exceptions import Neo4jError, ServiceUnavailable

from mpp.config import Settings, host_port
from mpp.stack.base import Progress, Server, StackError, run_checked
from mpp.stack.kafka import java_binary

JVM_FLAGS = [
    "-Xms128m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    # The --add-opens that Neo4j's own distribution sets (page cache and Netty buffers).
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "-Dlog4j2.disable.jmx=true",
    "-Dfile.encoding=UTF-8",
]


class Neo4jServer(Server):
    name = "neo4j"
    default_port = 17687

    def __init__(self, settings: Settings, stack_dir: Path, repo_root: Path) -> None:
        super().__init__(settings, stack_dir, repo_root)
        self.scripts = self.repo_root / "stack" / "neo4j"
        self.lib_dir: Path | None = None

    def address(self) -> tuple[str, int]:
        return host_port(self.settings.neo4j.uri, self.default_port)

    def probe(self) -> str | None:
        cfg = self.settings.neo4j
        try:
            # A plain session: execute_query would retry with backoff on a refused connection.
            with (
                neo4j.GraphDatabase.driver(
                    cfg.uri, auth=cfg.auth(), connection_timeout=2.0
                ) as driver,
                driver.session(database=cfg.database) as session,
            ):
                session.run("RETURN 1").consume()
        except (Neo4jError, ServiceUnavailable, OSError) as exc:
            return str(exc) or repr(exc)
        return None

    def install(self, progress: Progress) -> None:
        progress("neo4j: building the launcher and resolving jars (Maven, cached after first)")
        env = dict(os.environ, MPP_CACHE=str(self.cache_dir))
        out = run_checked(["bash", str(self.scripts / "install.sh")], "neo4j: install.sh", env=env)
        self.lib_dir = Path(out.strip().splitlines()[-1])

    def command(self) -> Sequence[str]:
        if self.lib_dir is None:
            raise StackError("neo4j: install() must run before the server starts")
        _, port = self.address()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            java_binary(),
            *JVM_FLAGS,
            "-cp",
            f"{self.lib_dir}/*",
            "mpp.stack.neo4j.Neo4jLauncher",
            str(self.data_dir.resolve()),
            str(port),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        password = self.settings.neo4j.password
        # The password travels in the environment, never on the command line (ps shows it).
        if password is not None:
            env["NEO4J_PASSWORD"] = password.get_secret_value()
        else:
            env.pop("NEO4J_PASSWORD", None)
        return env
