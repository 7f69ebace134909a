"""HTTP routes: ``/metrics``, ``/-/healthy``, ``/-/ready`` and ``/``. Routing only; no work."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__, landing, runbooks

if TYPE_CHECKING:
    from exporter.actions.webhook import Webhooks

from exporter.webconfig import BasicAuth, WebConfig, server_context

HANDSHAKE_TIMEOUT = 10.0

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
                 telemetry_path: str = "/metrics", webhooks: Webhooks | None = None,
                 web: WebConfig | None = None,
                 status: Callable[[], list[dict[str, Any]]] = list) -> None:
        host, port, family = parse_listen_address(address)
        self.status = status
        self.webhooks = webhooks
        self.web = web or WebConfig()
        self.basic_auth = BasicAuth(self.web.basic_auth_users)
        self.tls = server_context(self.web)
        self.registry = registry
        self.ready = ready
        self.telemetry_path = telemetry_path
        handler = type("Handler", (_Handler,), {"app": self})
        # The socketserver default backlog of 5 drops SYNs under a burst of clients, which
        # then wait a full second to retransmit.
        server_class = type("HTTPServer", (_TlsAwareServer,), {
            "address_family": family, "daemon_threads": True, "request_queue_size": 128,
            "tls": self.tls})
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
        routes: dict[str, Callable[[_Handler], None]] = {
            self.telemetry_path: _Handler.metrics,
            "/-/healthy": _Handler.healthy,
            "/-/ready": _Handler.readiness,
            "/": _Handler.landing,
            runbooks.PATH: _Handler.runbooks,
        }
        if self.webhooks is not None:
            routes["/actions"] = _Handler.actions
        return routes

    def post_routes(self) -> dict[str, Callable[[Webhooks, bytes], tuple[int, Any]]]:
        if self.webhooks is None:
            return {}
        from exporter.actions.webhook import Webhooks

        return {"/webhook/alertmanager": Webhooks.alertmanager,
                "/webhook/wa-callback": Webhooks.wa_callback}


class _TlsAwareServer(ThreadingHTTPServer):
    """Wraps each accepted socket in TLS, with the handshake in the request's own thread,
    so one slow or broken client never holds up ``accept`` for the others."""

    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes (plain HTTP, no client certificate) and dropped clients are
        # everyday events, not tracebacks.
        log.debug("connection failed", exc_info=True, extra={"client": client_address[0]})


class _Handler(BaseHTTPRequestHandler):
    app: Server
    server_version = f"wa-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle on, a keep-alive client waits ~40 ms
    # for the delayed ACK before the body arrives.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def _authorized(self, path: str) -> bool:
        """web-config basic auth guards everything but /-/healthy; a webhook with its own
        credentials (``webhook:`` settings) is checked by those instead."""
        webhooks = self.app.webhooks
        if path.startswith("/webhook/") and webhooks is not None and \
                webhooks.settings.has_auth:
            return webhooks.authorized(self.headers)
        if not self.app.basic_auth or path == "/-/healthy":
            return True
        if self.app.basic_auth.check(self.headers.get("Authorization", "")):
            return True
        self.close_connection = True
        self.send_json(HTTPStatus.UNAUTHORIZED, {"status": "error",
                                                 "error": "authentication required"},
                       {"WWW-Authenticate": 'Basic realm="wa-exporter"'})
        return False

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized(path):
            return
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

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        webhooks = self.app.webhooks
        route = self.app.post_routes().get(path)
        if route is None or webhooks is None:
            self.close_connection = True
            self.send_json(HTTPStatus.NOT_FOUND, {"status": "error", "error": "no such hook"})
            return
        if webhooks.settings.has_auth and not webhooks.authorized(self.headers):
            self.close_connection = True
            self.send_json(HTTPStatus.UNAUTHORIZED, {"status": "error",
                                                     "error": "authentication required"},
                           {"WWW-Authenticate": 'Bearer realm="wa-exporter"'})
            return
        if not webhooks.settings.has_auth and not self._authorized(path):
            return
        body = self._read_body(webhooks.settings.max_body_bytes)
        if body is None:
            return
        try:
            status, answer = route(webhooks, body)
        except Exception:
            log.exception("internal error in a webhook", extra={"path": path})
            status, answer = HTTPStatus.INTERNAL_SERVER_ERROR, {"status": "error",
                                                                "error": "internal error"}
        self.send_json(status, answer)

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None after answering 411/413/415."""
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_text is None \
                or not length_text.isdigit():
            self.close_connection = True
            self.send_json(HTTPStatus.LENGTH_REQUIRED, {"status": "error",
                                                        "error": "Content-Length required"})
            return None
        length = int(length_text)
        if length > limit:
            self.close_connection = True  # the unread body must not be parsed as a request
            self.send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {
                "status": "error", "error": f"body larger than {limit} bytes"})
            return None
        content_type = self.headers.get("Content-Type", "application/json")
        if not content_type.split(";")[0].strip().lower().endswith("json"):
            self.close_connection = True
            self.send_json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {
                "status": "error", "error": "Content-Type must be application/json"})
            return None
        return self.rfile.read(length)

    def send_json(self, status: int, data: object,
                  headers: dict[str, str] | None = None) -> None:
        self.send_text(status, json.dumps(data, default=str), "application/json", headers)

    def actions(self) -> None:
        assert self.app.webhooks is not None
        query = self.path.partition("?")[2]
        limit = 100
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key == "limit" and value.isdigit():
                limit = max(1, min(1000, int(value)))
        self.send_json(HTTPStatus.OK, {"records": self.app.webhooks.recent(limit)})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0],
                                         "request": format % args})

    def send_text(self, status: int, body: str | bytes, content_type: str = "text/plain; "
                  "charset=utf-8", extra_headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        headers = {"Content-Type": content_type, **self.app.web.http_server_config.headers,
                   **(extra_headers or {})}
        if self.request_version == "HTTP/1.0" and not self.close_connection:
            headers["Connection"] = "keep-alive"  # HTTP/1.0 clients must be told it stays open
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

    def runbooks(self) -> None:
        status, content_type, body = runbooks.page(self.path.split("?", 1)[0])
        self.send_text(status, body, content_type)

    def landing(self) -> None:
        records = self.app.webhooks.recent(15) if self.app.webhooks is not None else None
        page = landing.render(self.app.status(), records, self.app.telemetry_path)
        self.send_text(HTTPStatus.OK, page, "text/html; charset=utf-8")
