"""HTTP routes and their policy: ``/metrics``, ``/-/healthy``, ``/-/ready``, ``/``, and with
actions on, the webhooks and ``/actions``; web-config basic auth and headers. Routing only, no
work; the connections themselves are :mod:`exporter.transport`'s."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Callable, Collection, Mapping
from http import HTTPStatus
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from exporter import __version__, landing, runbooks
from exporter.exposition import exposition
from exporter.transport import Headers, HttpServer, Limits, Request, Response
from exporter.webconfig import BasicAuth, WebConfig, server_context

MAX_ACTIONS_LIMIT = 1000
# bcrypt checks one client address may have waiting or running; more are answered 429, so a
# password guesser queues behind itself, not in front of Prometheus.
AUTH_CHECKS_PER_CLIENT = 4


# A POST route: the request body in, (HTTP status, the JSON answer) out.
PostHandler = Callable[[bytes], tuple[int, Any]]
# A GET route: the request in, the answer out.
GetHandler = Callable[[Request], Response]


class Hooks(Protocol):
    """What the server routes to when actions are on (the actions' webhooks): their POST
    paths and handlers, the body limit and credentials that guard those, and the recent
    action records for ``/actions`` and the landing page."""

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def has_auth(self) -> bool:
        """Credentials of their own; without them web-config basic auth guards the hooks."""

    def authorized(self, headers: Headers) -> bool: ...

    def routes(self) -> Mapping[str, PostHandler]: ...

    def recent(self, limit: int) -> list[dict[str, Any]]: ...

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        """The records of one recent run (``GET /actions?run_id=``)."""

    def waiting(self) -> dict[str, Any]:
        """The off-peak window and the deferred alerts (``GET /actions``)."""


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
    """The exporter's HTTP endpoints on the event-loop transport: which route a request is
    for. ``check`` answers what can be refused from the headers alone, ``lane`` picks the
    worker pool, ``handle`` runs the route in it; who may ask and what a request may carry
    are the :class:`Policy`'s, the GET routes' answers the :class:`Pages`'."""

    def __init__(self, address: str, registry: CollectorRegistry, ready: Callable[[], bool],
                 telemetry_path: str = "/metrics", webhooks: Hooks | None = None,
                 web: WebConfig | None = None,
                 status: Callable[[], list[dict[str, Any]]] = list,
                 limits: Limits | None = None) -> None:
        host, port, family = parse_listen_address(address)
        self.web = web or WebConfig()
        self.get_routes = Pages(registry, ready, status, telemetry_path, webhooks).routes()
        self.post_routes: Mapping[str, PostHandler] = {}
        if webhooks is not None:
            self.post_routes = webhooks.routes()
        self.policy = Policy(self.web, webhooks, self.post_routes)
        # What the transport reads of its handler.
        self.max_body_bytes, self.per_client = self.policy.max_body_bytes, self.policy.per_client
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ListenAddressError(
                f"--web.listen-address={address!r}: cannot listen: {exc.strerror or exc}; "
                "fix: choose a free port or stop the process using it") from None
        self.http = HttpServer(sock, self, server_context(self.web), limits or Limits(),
                               f"wa-exporter/{__version__}")

    @property
    def address(self) -> str:
        host, port = self.http.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def start(self) -> None:
        self.http.start()

    def stop(self) -> None:
        self.http.stop()

    # on the event loop: refusals from the headers alone, before any body is read

    def check(self, request: Request) -> Response | None:
        path, method = request.path, request.method
        if method in ("GET", "HEAD"):
            refusal = self.policy.body_refusal(request) or self.policy.auth_refusal(request)
            if refusal is not None:
                return refusal
            if path in self.post_routes:
                return _json(HTTPStatus.METHOD_NOT_ALLOWED, {
                    "status": "error", "error": "use POST"}, {"Allow": "POST"}, close=True)
            if path not in self.get_routes:
                return Response(HTTPStatus.NOT_FOUND, b"404 page not found\n")
            return None
        if method != "POST":
            return _json(HTTPStatus.METHOD_NOT_ALLOWED, {
                "status": "error", "error": f"method {method} not allowed"},
                {"Allow": "GET, HEAD, POST"}, close=True)
        if path not in self.post_routes:
            return _json(HTTPStatus.NOT_FOUND, {"status": "error", "error": "no such hook"},
                         close=True)
        return self.policy.auth_refusal(request) or self.policy.body_refusal(request)

    def lane(self, request: Request) -> str:
        return self.policy.lane(request)

    def decorate(self, request: Request, response: Response) -> None:
        response.headers = {**self.web.http_server_config.headers, **response.headers}

    # in a worker thread

    def handle(self, request: Request) -> Response:
        if not self.policy.authenticated(request):
            return _basic_auth_required()
        if request.method == "POST":
            status, answer = self.post_routes[request.path](request.body)
            return _json(status, answer)
        response = self.get_routes[request.path](request)
        if len(response.body) > 1024 and "gzip" in request.headers.get("Accept-Encoding"):
            response.body = gzip.compress(response.body, compresslevel=1)
            response.headers["Content-Encoding"] = "gzip"
        return response


class Policy:
    """Who may ask and what a request may carry: web-config basic auth (checked by bcrypt,
    remembered per header), the webhooks' own credentials, the body limits, and the lanes
    that keep bcrypt checks and webhook decisions away from scrapes."""

    def __init__(self, web: WebConfig, webhooks: Hooks | None,
                 hook_paths: Collection[str]) -> None:
        self.basic_auth = BasicAuth(web.basic_auth_users)
        self.webhooks = webhooks
        self.hook_paths = hook_paths
        # Only the webhooks take a body: a GET's is refused from its headers.
        self.max_body_bytes = webhooks.max_body_bytes if webhooks is not None else 0
        self.per_client: Mapping[str, int] = {"auth": AUTH_CHECKS_PER_CLIENT}

    def auth_refusal(self, request: Request) -> Response | None:
        """Webhook credentials are cheap to compare and checked here; a basic-auth header is
        refused here only when it names no user at all (none, garbled) or bcrypt already
        refused it, else checked in :meth:`authenticated`: an unknown user costs a bcrypt
        check as a known one does, so the time of the answer does not tell them apart."""
        webhooks = self.webhooks
        if webhooks is not None and self._own_credentials(request.path):
            if webhooks.authorized(request.headers):
                return None
            return _json(HTTPStatus.UNAUTHORIZED, {"status": "error",
                                                   "error": "authentication required"},
                         {"WWW-Authenticate": 'Bearer realm="wa-exporter"'}, close=True)
        if self._needs_basic_auth(request.path) and \
                self.basic_auth.cached(request.headers.get("Authorization")) is False:
            return _basic_auth_required()
        return None

    def authenticated(self, request: Request) -> bool:
        """The bcrypt check (in a worker thread: tens of milliseconds), where one is due."""
        return not self._needs_basic_auth(request.path) or \
            self.basic_auth.check(request.headers.get("Authorization"))

    def _own_credentials(self, path: str) -> bool:
        """A webhook with credentials of its own (``webhook:`` settings) is checked by those."""
        return path in self.hook_paths and self.webhooks is not None and self.webhooks.has_auth

    def _needs_basic_auth(self, path: str) -> bool:
        """web-config basic auth guards everything but /-/healthy and the webhooks with
        credentials of their own."""
        return bool(self.basic_auth) and path != "/-/healthy" and not self._own_credentials(path)

    def body_refusal(self, request: Request) -> Response | None:
        """A GET takes none; a webhook's must give its length, within the limit, and be
        JSON."""
        method = request.method
        if method in ("GET", "HEAD"):
            if request.headers.get("Content-Length", "0") != "0" or \
                    "Transfer-Encoding" in request.headers:
                # Nothing here reads one, and a body sent a byte a second would hold the
                # connection for the whole --web.read-timeout.
                return Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"a {method} request takes no body\n".encode(), close=True)
            return None
        length_text = request.headers.get("Content-Length")
        if "Transfer-Encoding" in request.headers or not length_text.isdigit():
            return _json(HTTPStatus.LENGTH_REQUIRED, {"status": "error",
                                                      "error": "Content-Length required"},
                         close=True)
        if len(length_text) > 19 or int(length_text) > self.max_body_bytes:
            # close: the unread body must not be parsed as a request
            return _json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {
                "status": "error", "error": f"body larger than {self.max_body_bytes} bytes"},
                close=True)
        content_type = request.headers.get("Content-Type", "application/json")
        if not content_type.split(";")[0].strip().lower().endswith("json"):
            return _json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {
                "status": "error", "error": "Content-Type must be application/json"},
                close=True)
        return None

    def lane(self, request: Request) -> str:
        """Three pools of worker threads: a password that only bcrypt can check (a guesser
        costs tens of milliseconds a try), a webhook (its decision may wait on the database),
        and everything else, so neither of the first two ever delays a scrape."""
        if self._needs_basic_auth(request.path) and \
                self.basic_auth.cached(request.headers.get("Authorization")) is None:
            return "auth"
        return "hook" if request.method == "POST" else "page"


class Pages:
    """The GET routes' answers: the metrics, health, readiness, the landing page, the
    runbooks and, with actions on, the action records."""

    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool],
                 status: Callable[[], list[dict[str, Any]]], telemetry_path: str,
                 webhooks: Hooks | None) -> None:
        self.registry = registry
        self.ready = ready
        self.status = status
        self.telemetry_path = telemetry_path
        self.webhooks = webhooks

    def routes(self) -> dict[str, GetHandler]:
        routes: dict[str, GetHandler] = {
            self.telemetry_path: self.metrics, "/-/healthy": self.healthy,
            "/-/ready": self.readiness, "/": self.landing, runbooks.PATH: self.runbook_page}
        if self.webhooks is not None:
            routes["/actions"] = self.actions
        return routes

    def metrics(self, request: Request) -> Response:
        body, content_type = exposition(self.registry, request.headers.get("Accept"))
        return Response(HTTPStatus.OK, body, content_type)

    def healthy(self, request: Request) -> Response:
        return Response(HTTPStatus.OK, b"Healthy\n")

    def readiness(self, request: Request) -> Response:
        if self.ready():
            return Response(HTTPStatus.OK, b"Ready\n")
        return Response(HTTPStatus.SERVICE_UNAVAILABLE, b"Not ready: first refresh running\n")

    def runbook_page(self, request: Request) -> Response:
        status, content_type, body = runbooks.page(request.path)
        return Response(status, body, content_type)

    def landing(self, request: Request) -> Response:
        records = self.webhooks.recent(15) if self.webhooks is not None else None
        page = landing.render(self.status(), records, self.telemetry_path)
        return Response(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

    def actions(self, request: Request) -> Response:
        """The latest action records (``?limit=N``) with the off-peak window and what is
        deferred to it, or one run's records (``?run_id=ID``)."""
        assert self.webhooks is not None
        limit = 100
        for part in request.query.split("&"):
            key, _, value = part.partition("=")
            if key == "run_id":
                if not value.isalnum() or len(value) > 64:
                    return _json(HTTPStatus.BAD_REQUEST, {
                        "status": "error", "error": "run_id: not a run id"})
                return _json(HTTPStatus.OK, {"records": self.webhooks.of_run(value)})
            if key != "limit":
                continue
            # Bounded before int(): Python refuses to convert over 4,300 digits.
            if not value.isdigit() or len(value) > 9:
                return _json(HTTPStatus.BAD_REQUEST, {
                    "status": "error",
                    "error": f"limit: not a whole number from 1 to {MAX_ACTIONS_LIMIT}"})
            limit = max(1, min(MAX_ACTIONS_LIMIT, int(value)))
        return _json(HTTPStatus.OK, {"records": self.webhooks.recent(limit),
                                     **self.webhooks.waiting()})


def _json(status: int, data: object, headers: dict[str, str] | None = None,
          close: bool = False) -> Response:
    return Response(status, json.dumps(data, default=str).encode(), "application/json",
                    dict(headers or {}), close)


def _basic_auth_required() -> Response:
    return _json(HTTPStatus.UNAUTHORIZED, {"status": "error", "error": "authentication required"},
                 {"WWW-Authenticate": 'Basic realm="wa-exporter"'}, close=True)
