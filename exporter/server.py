"""HTTP routes: ``/metrics``, ``/-/healthy``, ``/-/ready`` and ``/``. Routing only; no work."""

from __future__ import annotations

import gzip
import html
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__

log = logging.getLogger(__name__)


class ListenAddressError(ValueError):
    pass


def parse_listen_address(address: str) -> tuple[str, int, socket.AddressFamily]:
    """``:9864``, ``127.0.0.1:9864``, ``[::1]:9864``, ``localhost:0`` -> (host, port, family)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(
            f"--web.listen-address={address!r}: not HOST:PORT; fix: use e.g. :9864 or "
            "127.0.0.1:9864")
    family = socket.AF_INET
    if host.startswith("[") and host.endswith("]"):
        host, family = host[1:-1], socket.AF_INET6
    return host or "0.0.0.0", int(port_text), family  # noqa: S104 - like every exporter


class Server:
    """A threaded HTTP server; each request gets its own thread, so one slow client blocks none."""

    def __init__(self, address: str, registry: CollectorRegistry, ready: Callable[[], bool],
                 telemetry_path: str = "/metrics") -> None:
        host, port, family = parse_listen_address(address)
        self.registry = registry
        self.ready = ready
        self.telemetry_path = telemetry_path
        handler = type("Handler", (_Handler,), {"app": self})
        # The socketserver default backlog of 5 drops SYNs under a burst of clients, which
        # then wait a full second to retransmit.
        server_class = type("HTTPServer", (ThreadingHTTPServer,), {
            "address_family": family, "daemon_threads": True, "request_queue_size": 128})
        try:
            self.httpd = server_class((host, port), handler)
        except OSError as exc:
            raise ListenAddressError(
                f"--web.listen-address={address!r}: cannot listen: {exc.strerror or exc}; "
                "fix: choose a free port or stop the process using it") from None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def routes(self) -> dict[str, Callable[[_Handler], None]]:
        return {
            self.telemetry_path: _Handler.metrics,
            "/-/healthy": _Handler.healthy,
            "/-/ready": _Handler.readiness,
            "/": _Handler.landing,
        }


class _Handler(BaseHTTPRequestHandler):
    app: Server
    server_version = f"wa-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle on, a keep-alive client waits ~40 ms
    # for the delayed ACK before the body arrives.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        route = self.app.routes().get(path)
        if route is None:
            self.send_text(HTTPStatus.NOT_FOUND, "404 page not found\n")
            return
        try:
            route(self)
        except Exception:
            log.exception("internal error serving request", extra={"path": path})
            self.send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0],
                                         "request": format % args})

    def send_text(self, status: int, body: str | bytes, content_type: str = "text/plain; "
                  "charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        headers = {"Content-Type": content_type}
        if len(data) > 1024 and "gzip" in self.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self.send_text(HTTPStatus.OK, encoder(self.app.registry), content_type)

    def healthy(self) -> None:
        self.send_text(HTTPStatus.OK, "Healthy\n")

    def readiness(self) -> None:
        if self.app.ready():
            self.send_text(HTTPStatus.OK, "Ready\n")
        else:
            self.send_text(HTTPStatus.SERVICE_UNAVAILABLE, "Not ready: first refresh running\n")

    def landing(self) -> None:
        links = "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>'
                        for p in (self.app.telemetry_path, "/-/healthy", "/-/ready"))
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>wa-exporter</title>"
                f"</head><body><h1>wa-exporter {html.escape(__version__)}</h1>"
                f"<p>Prometheus exporter for the WhatsApp Business API client.</p>"
                f"<ul>{links}</ul></body></html>")
        self.send_text(HTTPStatus.OK, page, "text/html; charset=utf-8")
