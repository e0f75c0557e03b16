"""Redis from Debian's packages."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import redis

from mpp.config import host_port
from mpp.stack.base import Progress, Server, StackError


class RedisServer(Server):
    name = "redis"
    default_port = 16379

    def address(self) -> tuple[str, int]:
        return host_port(self.settings.redis.url, self.default_port)

    def _client(self) -> redis.Redis:
        password = self.settings.redis.password
        return redis.Redis.from_url(
            self.settings.redis.url,
            password=password.get_secret_value() if password else None,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )

    def probe(self) -> str | None:
        try:
            with self._client() as client:
                client.ping()
        except redis.RedisError as exc:
            return str(exc) or repr(exc)
        return None

    def missing_packages(self) -> list[str]:
        return [] if shutil.which("redis-server") else ["redis-server"]

    def install(self, progress: Progress) -> None:
        if self.missing_packages():
            raise StackError("redis: redis-server not found; apt-get install redis-server")

    def command(self) -> Sequence[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis: redis-server not found after installing redis-server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, port = self.address()
        argv = [
            binary,
            "--bind",
            host,
            "--port",
            str(port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--maxmemory",
            "512mb",
            # A cache: under memory pressure, evict keys that have a TTL first.
            "--maxmemory-policy",
            "volatile-lru",
        ]
        password = self.settings.redis.password
        if password is not None:
            argv += ["--requirepass", password.get_secret_value()]
        return argv
