"""The host gateway: pods reach the local stack's loopback servers through the bridge address.

One asyncio listener per port on LISTEN (10.244.0.1, the host as pods see it) copies bytes
both ways to TARGET (127.0.0.1) on the same port. `mpp cluster up` runs this file as a
script (standard library only, no package import, a few MB of memory):

    python cluster_forwarder.py --listen 10.244.0.1 --target 127.0.0.1 --ports 15432,16379

A connection whose target does not answer is closed at once (the pod sees a reset).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError):
        await writer.wait_closed()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _handler(target: str, port: int) -> Handler:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.wait_for(
                asyncio.open_connection(target, port), timeout=5
            )
        except (OSError, TimeoutError):
            await _close(client_w)
            return
        try:
            await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))
        finally:
            await _close(upstream_w)
            await _close(client_w)

    return handle


async def serve(listen: str, target: str, ports: list[int]) -> None:
    servers = [
        await asyncio.start_server(_handler(target, port), listen, port, reuse_address=True)
        for port in ports
    ]
    _say(f"forwarding {listen} -> {target} on ports {ports}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    _say("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--target", default="127.0.0.1")
    parser.add_argument("--ports", required=True, help="comma-separated TCP ports")
    args = parser.parse_args(argv)
    ports = sorted({int(p) for p in args.ports.split(",") if p.strip()})
    try:
        asyncio.run(serve(args.listen, args.target, ports))
    except OSError as exc:
        _say(f"cannot listen on {args.listen}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
