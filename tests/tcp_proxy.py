"""A TCP proxy a test controls: forward, cut (refuse and reset), black-hole (accept, drop),
slow (delay every chunk) or restart (reset every connection, accept new ones at once)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

# SO_LINGER on, 0 s: close() sends a reset instead of a polite FIN.
_RESET = struct.pack("ii", 1, 0)


class TcpProxy:
    """Listens on 127.0.0.1:<free port> and relays to ``upstream`` (``(host, port)``, or the
    path of a unix socket such as the Docker engine's); switch modes at any time.

    - ``forward()``: relay both ways (the initial mode);
    - ``cut()``: close every relayed connection and refuse new ones, like a stopped server;
    - ``blackhole()``: keep connections open but drop every byte, like a lost network path;
    - ``slow(seconds)``: relay, but hold every chunk that long first, in each direction (a
      request and its answer take twice that); ``slow(0)`` relays at full speed again;
    - ``restart()``: reset every relayed connection and accept new ones at once, like a
      server restarted between two requests of its clients.

    ``accepted``, ``refused`` and ``delayed`` count relayed connections, connections refused
    while cut, and chunks held back while slow: proof that a client met the fault.
    """

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self.mode = "forward"
        self.delay = 0.0
        self.accepted = 0
        self.refused = 0
        self.delayed = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self.swallowed = 0  # bytes dropped while black-holed: proof that a client is stuck
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # --- modes ---

    def forward(self) -> None:
        with self._lock:
            self.mode = "forward"
            self.delay = 0.0
            # Black-holed connections are dead to their clients: close them, like a healed path
            # whose peers timed out.
            self._close_all()

    def cut(self) -> None:
        with self._lock:
            self.mode = "cut"
            self._close_all()

    def blackhole(self) -> None:
        with self._lock:
            self.mode = "blackhole"

    def slow(self, delay_seconds: float) -> None:
        with self._lock:
            self.mode = "forward"
            self.delay = max(0.0, delay_seconds)

    def restart(self) -> None:
        self.cut()
        self.forward()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            self._close_all()

    # --- plumbing ---

    def _close_all(self) -> None:
        for conn in self._conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()
            except OSError:
                pass
        self._conns.clear()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                if mode == "cut":
                    self.refused += 1
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                    client.close()  # reset: the client sees the connection refused/reset
                    continue
                self._conns.append(client)
            if mode == "blackhole":
                threading.Thread(target=self._drain, args=(client,), daemon=True).start()
                continue
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append(server)
                self.accepted += 1
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            server = socket.socket(socket.AF_UNIX)
            server.settimeout(5)
            try:
                server.connect(self.upstream)
            except OSError:
                server.close()
                raise
        else:
            server = socket.create_connection(self.upstream, timeout=5)
        server.settimeout(None)
        return server

    def _drain(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                self.swallowed += len(data)
        except OSError:
            pass

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay:
                    self.delayed += 1
                    time.sleep(self.delay)  # the fault itself: a slow network or server
                if self.mode == "blackhole":
                    self.swallowed += len(data)  # nothing reaches the other side any more
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
