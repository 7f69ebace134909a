"""What the transport and the routes exchange: limits, requests, answers, the handler."""

from __future__ import annotations

import resource
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

# File descriptors kept free for everything but HTTP: database and Docker connections, the
# audit log, volume-scan workers, pipes to `docker exec`.
FD_RESERVE = 64


@dataclass(frozen=True)
class Limits:
    read_header_timeout: float = 5.0
    read_timeout: float = 30.0
    idle_timeout: float = 120.0
    tls_handshake_timeout: float = 5.0
    max_connections: int = 512
    max_header_bytes: int = 64 * 1024
    # Threads per lane (see Handler.lane). Handlers are Python, so the GIL runs one at a
    # time: more threads only wait for it, and slow the event loop that waits with them.
    workers: int = 2

    def connection_cap(self) -> int:
        """``max_connections``, lowered to stay under the soft file-descriptor limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - FD_RESERVE))


class Headers:
    """Request headers by lower-cased name; a repeated header keeps its first value."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        self._values.setdefault(name.lower(), value)

    def get(self, name: str, default: str = "") -> str:
        return self._values.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values


@dataclass
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: Headers
    client: str
    keep_alive: bool = True
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after this answer (an unread body, a refusal)


class Handler(Protocol):
    """The routes. ``check`` and ``lane`` run on the event loop once the headers are in and
    must be cheap; ``handle`` runs in a worker thread of the request's lane once the body is
    in."""

    max_body_bytes: int
    # Per lane, how many requests of one client address it may hold, waiting or running;
    # more are answered 429 at once. A lane not named here has no such bound.
    per_client: Mapping[str, int]

    def check(self, request: Request) -> Response | None: ...

    def lane(self, request: Request) -> str:
        """Which pool of worker threads runs ``handle``: requests in one lane never wait
        for those in another."""

    def handle(self, request: Request) -> Response: ...

    def decorate(self, request: Request, response: Response) -> None:
        """Headers every answer carries (web config, compression)."""


STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}" for status in HTTPStatus}


def error(status: HTTPStatus, text: str) -> Response:
    return Response(status, f"{text}\n".encode(), close=True)
