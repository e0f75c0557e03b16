"""One process of the local cluster: launched detached, probed, stopped by pid and start time.

The same rules as mpp.stack.base's servers: a pid file holds "pid start-time", so only the
process we started is ever signalled; readiness is a real round trip bounded by a deadline,
and a component that dies or misses it raises StackError naming its log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mpp.stack.base import Progress, StackError, pid_alive, port_open, start_time, tail

Probe = Callable[[], str | None]


def http_probe(url: str, context: ssl.SSLContext | None = None) -> Probe:
    """GET url: None on 200, else why not."""

    def probe() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310
                return None if response.status == 200 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return str(getattr(exc, "reason", exc))

    return probe


def insecure_tls() -> ssl.SSLContext:
    """For components' own self-signed /healthz (controller-manager, scheduler)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def command_probe(argv: Sequence[str]) -> Probe:
    def probe() -> str | None:
        try:
            result = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if result.returncode == 0:
            return None
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit {result.returncode}"

    return probe


@dataclass
class Component:
    name: str
    argv: list[str]
    probe: Probe
    endpoint: str
    run_dir: Path
    log_dir: Path
    # (host, port) pairs the process listens on: taken by another program, it cannot start.
    ports: tuple[tuple[str, int], ...] = ()
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    stop_timeout_s: float = 20.0

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def owned_pid(self) -> int | None:
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and start_time(pid) == started:
            return pid
        return None

    def launch(self, progress: Progress) -> bool:
        """Start the process unless ours already runs. Returns whether it was started."""
        if self.owned_pid() is not None:
            return False
        for host, port in self.ports:
            if port_open(host, port):
                raise StackError(
                    f"{self.name}: {host}:{port} is taken by another program; stop it (see "
                    f"`ss -ltnp 'sport = :{port}'`) and run `mpp cluster up` again"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        progress(f"{self.name}: starting (log: {self.log_file})")
        with self.log_file.open("ab") as log:
            log.write(f"\n--- started by mpp cluster up at {time.ctime()} ---\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.run_dir,
                env=self.env,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid} {start_time(process.pid)}\n")
        return True

    def wait_ready(self, deadline: float, progress: Progress | None = None) -> None:
        problem: str | None = "not probed yet"
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            if self.owned_pid() is None:
                raise StackError(
                    f"{self.name} exited while starting; see {self.log_file}:\n"
                    f"{tail(self.log_file)}"
                )
            problem = self.probe()
            if problem is None:
                return
            if progress is not None and time.monotonic() - last_note > 15:
                progress(f"{self.name}: waiting ({problem})")
                last_note = time.monotonic()
            time.sleep(0.3)
        raise StackError(
            f"{self.name} was not ready within the deadline (last check: {problem}); "
            f"see {self.log_file}:\n{tail(self.log_file)}"
        )

    def stop(self, progress: Progress, sig: signal.Signals = signal.SIGTERM) -> bool:
        pid = self.owned_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        progress(f"{self.name}: stopping process {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + self.stop_timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            progress(f"{self.name}: still running after {self.stop_timeout_s:.0f}s, killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def rss_kib(self) -> int:
        """Resident memory of the process group we started (the process and its children)."""
        pid = self.owned_pid()
        if pid is None:
            return 0
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                if int(stat[2]) != pid:  # process group id
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                continue
        return total
