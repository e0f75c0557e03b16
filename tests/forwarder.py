"""A TCP forwarder that tests cut and restore: a store "down" for one client only.

Tests run beside each other on one stack, so outages are staged in front of the shared
servers instead of by stopping them: a client pointed at the forwarder's port loses the store
when the forwarder is cut (listener closed, every open connection shut) and finds it again on
the same port when it is restored.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from mpp.pipeline import free_port


class Cuttable:
    """Forwards ``host``:``port`` (127.0.0.1 and a free port by default) to ``target``."""

    def __init__(
        self, target: tuple[str, int], port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.target = target
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        server = socket.create_server((self.host, self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """The store is gone for this forwarder's clients until ``restore``."""
        if self._server is not None:
            # shutdown wakes the thread blocked in accept(); close alone would leave the
            # socket listening until that accept returned.
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    close = cut
