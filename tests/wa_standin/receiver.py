"""A tiny webhook receiver for tests: collects the JSON POSTs the stand-in's GC sends."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Callback:
    path: str
    headers: dict[str, str]
    body: Any


class CallbackReceiver:
    """``with CallbackReceiver() as rx: ...; rx.get(timeout=5)`` returns the next Callback."""

    def __init__(self, host: str = "127.0.0.1", status: int = 200) -> None:
        self.status = status
        self._queue: queue.Queue[Callback] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(data)
                except ValueError:
                    body = data.decode(errors="replace")
                receiver._queue.put(Callback(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/webhook"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CallbackReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, timeout: float = 10.0) -> Callback:
        """The next callback; raises ``queue.Empty`` after ``timeout`` seconds."""
        return self._queue.get(timeout=timeout)

    def get_many(self, count: int, timeout: float = 10.0) -> list[Callback]:
        return [self.get(timeout) for _ in range(count)]

    def empty(self) -> bool:
        return self._queue.empty()
