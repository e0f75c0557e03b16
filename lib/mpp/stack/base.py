"""The local stack's building blocks: a server we may install, launch, probe and stop.

Rules every server follows:
- A server that already answers on its configured endpoint is used as it is, whoever started
  it. A server configured on a non-loopback host is never started here, only probed.
- What we start runs detached (its own session), with its data and log under the stack
  folder, and a pid file beside them. ``stop`` signals only processes whose pid file we wrote
  and whose start time still matches, so a recycled pid is never killed.
- Readiness is a real protocol round trip (a metadata request, ``RETURN 1``, ``PING``...),
  bounded by a deadline; a server that dies or misses the deadline raises ``StackError``
  naming its log file, never a hang.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mpp.config import Settings, is_loopback

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A server could not be installed or started; the message says where to look."""


class State(StrEnum):
    OURS = "up (started by the stack)"
    EXTERNAL = "up (external, reused)"
    DOWN = "down"


@dataclass(frozen=True)
class Status:
    name: str
    endpoint: str
    state: State
    pid: int | None
    log_file: Path | None
    detail: str = ""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, a unique identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def tail(path: Path, lines: int = 15) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(content[-lines:])


def cache_dir() -> Path:
    """What the stack builds and downloads once per machine: ``$MPP_CACHE_DIR``, by default
    ``~/.cache/mpp`` (images, build roots, venvs, the load generator)."""
    return Path(os.environ.get("MPP_CACHE_DIR", Path.home() / ".cache" / "mpp"))


def running_as_root() -> bool:
    return os.geteuid() == 0


class Server(ABC):
    """One server of the local stack."""

    name: str
    default_port: int
    # The signal that makes the server shut down cleanly but promptly.
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout_s: float = 45.0

    def __init__(self, settings: Settings, stack_dir: Path, repo_root: Path) -> None:
        self.settings = settings
        self.stack_dir = stack_dir
        self.repo_root = repo_root
        self.home = stack_dir / self.name
        self.data_dir = self.home / "data"
        self.log_file = self.home / f"{self.name}.log"
        # Where the process's own stdout and stderr go; servers with a log file of their own
        # (Kafka's log4j, Neo4j's) point log_file at that one.
        self.stdout_file = self.log_file
        self.pid_file = self.home / f"{self.name}.pid"
        self.cache_dir = settings.stack.cache_dir

    # -- what each server defines ------------------------------------------------------------

    @abstractmethod
    def address(self) -> tuple[str, int]:
        """The configured (host, port)."""

    @abstractmethod
    def probe(self) -> str | None:
        """One real round trip with the server: None when it answers, else why not."""

    @abstractmethod
    def install(self, progress: Progress) -> None:
        """Make the server's software available; idempotent and cached outside the clone."""

    @abstractmethod
    def command(self) -> Sequence[str]:
        """The command line that runs the server in the foreground."""

    def missing_packages(self) -> list[str]:
        """Debian packages this server needs that are not installed (installed in one go)."""
        return []

    def prepare(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        """Create the data folder's initial state (formatting, initdb...) when missing."""

    def after_ready(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        """Work that needs the server up (databases, users); run for reused servers too."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def run_as(self) -> str | None:
        """The user to run the server as, when it refuses root (PostgreSQL)."""
        return None

    # -- shared behaviour --------------------------------------------------------------------

    def endpoint(self) -> str:
        host, port = self.address()
        return f"{host}:{port}"

    def owned_pid(self) -> int | None:
        """The pid of a live process that we started for this server, if any."""
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        # The start time guards against a recycled pid (servers rename their process title,
        # so the command line cannot tell).
        if pid_alive(pid) and start_time(pid) == started:
            return pid
        return None

    def status(self) -> Status:
        pid = self.owned_pid()
        host, port = self.address()
        problem = self.probe() if port_open(host, port) else "port closed"
        if problem is None:
            state = State.OURS if pid else State.EXTERNAL
            return Status(self.name, self.endpoint(), state, pid, self.log_file if pid else None)
        detail = problem if pid is None else f"process {pid} alive but not answering: {problem}"
        return Status(self.name, self.endpoint(), State.DOWN, pid, self.log_file, detail)

    def launch(self, progress: Progress) -> subprocess.Popen[bytes] | None:
        """Start the server unless it already answers. Returns the process we started."""
        host, port = self.address()
        if port_open(host, port):
            problem = self.probe()
            if problem is None:
                progress(f"{self.name}: reusing the server on {self.endpoint()}")
                return None
            if self.owned_pid() is None:
                raise StackError(
                    f"{self.name}: port {port} on {host} is taken by something that does not "
                    f"answer as {self.name} ({problem}); stop it or set another port"
                )
            # Ours and still starting: the caller waits for it.
            return None
        if not is_loopback(host):
            raise StackError(
                f"{self.name}: configured at {self.endpoint()}, which is not this machine, and "
                "it does not answer; the stack starts servers on loopback only"
            )
        self.install(progress)
        self.home.mkdir(parents=True, exist_ok=True)
        self.prepare(progress)
        progress(f"{self.name}: starting on {self.endpoint()} (log: {self.log_file})")
        log = self.stdout_file.open("ab")
        process = subprocess.Popen(
            list(self.command()),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
            env=self.environment(),
            start_new_session=True,
            user=self.run_as(),
            group=self.run_as(),
        )
        log.close()
        self.pid_file.write_text(f"{process.pid} {start_time(process.pid)}\n")
        return process

    def wait_ready(self, process: subprocess.Popen[bytes] | None, deadline: float) -> None:
        problem: str | None = "not probed yet"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with status {process.returncode} while starting; "
                    f"see {self.log_file}:\n{tail(self.log_file)}{self._stdout_tail()}"
                )
            host, port = self.address()
            if port_open(host, port):
                problem = self.probe()
                if problem is None:
                    return
            time.sleep(0.25)
        raise StackError(
            f"{self.name} was not ready on {self.endpoint()} within the deadline "
            f"(last check: {problem}); see {self.log_file}:\n{tail(self.log_file)}"
            f"{self._stdout_tail()}"
        )

    def _stdout_tail(self) -> str:
        if self.stdout_file == self.log_file:
            return ""
        return f"\nand {self.stdout_file}:\n{tail(self.stdout_file, 8)}"

    def stop(self, progress: Progress) -> bool:
        """Stop the server if we started it. Returns whether something was stopped."""
        pid = self.owned_pid()
        if pid is None:
            return False
        progress(f"{self.name}: stopping process {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, self.stop_signal)
        deadline = time.monotonic() + self.stop_timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            progress(f"{self.name}: still running after {self.stop_timeout_s:.0f}s, killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True


def run_checked(
    argv: Sequence[str], what: str, log_file: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a setup command; on failure raise StackError with its output (and the log path)."""
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        where = f"; see {log_file}" if log_file else ""
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise StackError(f"{what} failed (exit {result.returncode}){where}:\n{output}")
    return result.stdout


def apt_install(packages: Sequence[str], progress: Progress) -> None:
    """Install Debian packages (needs root); tells a non-root user the command instead."""
    if not running_as_root():
        raise StackError(
            "missing Debian packages; install them with: sudo apt-get install -y "
            + " ".join(packages)
        )
    if shutil.which("apt-get") is None:
        raise StackError(f"missing {', '.join(packages)} and no apt-get to install them")
    progress(f"apt-get install {' '.join(packages)} (once per machine)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run_checked(["apt-get", "update", "-qq"], "apt-get update", env=env)
    run_checked(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        f"apt-get install {' '.join(packages)}",
        env=env,
    )
