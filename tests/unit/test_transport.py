"""The HTTP transport alone, on loopback, with a handler of a few lines: keep-alive, pipelining,
HEAD, refusals before the body, header and body bounds, eviction at the connection cap."""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from typing import ClassVar

import pytest

from exporter.transport import HttpServer, Limits, Request, Response


class EchoHandler:
    """Answers with the method and path; ``/slow`` waits for ``release``, in a lane of its
    own; ``/held`` too, in a lane where a client may hold two requests; ``/boom`` raises;
    ``check`` refuses a declared body over 100 bytes."""

    max_body_bytes = 1000
    per_client: ClassVar[dict[str, int]] = {"held": 2}

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[str] = []

    def check(self, request: Request) -> Response | None:
        if int(request.headers.get("Content-Length", "0") or 0) > 100:
            return Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too big\n", close=True)
        return None

    def lane(self, request: Request) -> str:
        return request.path[1:] if request.path in ("/slow", "/held") else "main"

    def handle(self, request: Request) -> Response:
        self.seen.append(request.path)
        if request.path in ("/slow", "/held"):
            self.release.wait(10)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return Response(HTTPStatus.OK, f"{request.method} {request.path} {len(request.body)}"
                        .encode())

    def decorate(self, request: Request, response: Response) -> None:
        response.headers["X-Test"] = "yes"


@pytest.fixture
def served() -> Iterator[tuple[HttpServer, EchoHandler]]:
    yield from _serve(Limits(max_connections=4, read_header_timeout=5, idle_timeout=5))


def _serve(limits: Limits) -> Iterator[tuple[HttpServer, EchoHandler]]:
    handler = EchoHandler()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = HttpServer(sock, handler, None, limits, "test")
    server.start()
    yield server, handler
    handler.release.set()
    server.stop()


def connect(server: HttpServer) -> socket.socket:
    return socket.create_connection(server.sock.getsockname()[:2], timeout=5)


def read_answer(sock: socket.socket, head_only: bool = False) -> tuple[bytes, bytes]:
    """One answer (head, body), by its Content-Length (none after a HEAD); reads byte by
    byte, so the next pipelined answer stays in the socket."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"closed after {head!r}"
        head += byte
    head = head[:-4]
    if head_only:
        return head, b""
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return head, body


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_keep_alive_and_pipelined_requests_are_answered_in_order(served) -> None:
    server, _ = served
    with connect(server) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        answers = [read_answer(sock) for _ in range(3)]
    assert [body for _, body in answers] == [b"GET /a 0", b"GET /b 0", b"POST /c 3"]
    assert all(b"X-Test: yes" in head and b"Connection" not in head for head, _ in answers)


def test_http_1_0_keep_alive_is_told_and_head_has_no_body(served) -> None:
    server, _ = served
    with connect(server) as sock:
        sock.sendall(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, body = read_answer(sock)
        assert b"Connection: keep-alive" in head and body == b"GET /x 0"
        sock.sendall(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_answer(sock, head_only=True)  # HEAD: a Content-Length, no body
        assert b"Content-Length: 9" in head
        assert read_answer(sock)[1] == b"GET /y 0"  # the next answer follows at once


def test_refusals_come_before_the_body_and_close(served) -> None:
    server, handler = served
    with connect(server) as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer
    assert handler.seen == []


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa2\r\n\r\nab",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
], ids=["duplicate-length", "non-ascii-length", "tls-hello", "bad-header"])
def test_malformed_requests_get_400_and_close(served, request_bytes: bytes) -> None:
    server, handler = served
    with connect(server) as sock:
        sock.sendall(request_bytes)
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert handler.seen == []


def test_a_whole_request_with_oversized_headers_is_refused_too(served) -> None:
    """Headers over the limit that arrive complete, in one write, are refused as those
    still arriving are; headers under it pass."""
    server, handler = served
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n")
        assert read_to_close(sock).startswith(b"HTTP/1.1 431 ")
    with connect(server) as sock:
        sock.sendall(b"GET /" + b"p" * 70_000 + b" HTTP/1.1\r\n\r\n")
        assert read_to_close(sock).startswith(b"HTTP/1.1 431 ")
    assert handler.seen == []
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\nX-Pad: " + b"a" * 60_000
                     + b"\r\n\r\n")
        assert read_to_close(sock).startswith(b"HTTP/1.1 200 ")


def test_oversized_headers_and_bodies_are_refused(served) -> None:
    server, _ = served
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 70_000)
        assert read_to_close(sock).startswith(b"HTTP/1.1 431 ")
    with connect(server) as sock:  # chunked: no Content-Length to refuse up front
        sock.sendall(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"400\r\n" + b"b" * 1024 + b"\r\n")
        assert read_to_close(sock).startswith(b"HTTP/1.1 413 ")


def test_a_handler_error_is_a_500_and_the_server_goes_on(served,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    server, _ = served
    with connect(server) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_to_close(sock).startswith(b"HTTP/1.1 500 ")
    with connect(server) as sock:
        sock.sendall(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[1] == b"GET /fine 0"
    assert "internal error serving request" in caplog.text


def test_at_the_cap_the_oldest_idle_connection_is_evicted_and_busy_ones_never(served) -> None:
    server, handler = served
    busy = connect(server)
    busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    idle = [connect(server) for _ in range(3)]  # 4 connections: the cap
    idle[0].sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    read_answer(idle[0])  # the oldest, now idle again after its answer
    newcomers = []
    for _ in range(3):
        sock = connect(server)
        sock.sendall(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[1] == b"GET /new 0"
        newcomers.append(sock)
    assert all(read_to_close(sock) == b"" for sock in idle)  # all three evicted
    handler.release.set()
    assert read_answer(busy)[1] == b"GET /slow 0"  # the busy one was kept
    for sock in [busy, *newcomers]:
        sock.close()


def test_the_cap_stays_under_the_open_file_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert Limits(max_connections=10).connection_cap() == 10
    assert Limits(max_connections=10**9).connection_cap() == soft - 64


def test_headers_must_arrive_within_the_header_timeout() -> None:
    for server, _ in _serve(Limits(read_header_timeout=0.3, idle_timeout=0.3)):
        for half in (b"GET / HTTP/1.1\r\n", b"GET /\r\n"):  # the second: HTTP/0.9
            with connect(server) as sock:
                sock.sendall(half)
                assert read_to_close(sock) == b""  # dropped, no answer
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_answer(sock)
            assert read_to_close(sock) == b""  # idle after its answer: closed
        assert server.connections == 0


def test_expect_100_continue_is_answered_before_the_body(served) -> None:
    server, _ = served
    with connect(server) as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert read_answer(sock, head_only=True)[0] == b"HTTP/1.1 100 Continue"
        sock.sendall(b"abc")
        assert read_answer(sock)[1] == b"POST /e 3"


def test_requests_in_one_lane_never_wait_for_another_lane(served) -> None:
    """Every worker of the /slow lane busy and more queued behind them: other requests are
    still answered, and the queued ones get their turn once the lane frees up."""
    server, handler = served
    slow = [connect(server) for _ in range(server.limits.workers + 1)]
    for sock in slow:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 5
    while handler.seen.count("/slow") < server.limits.workers:
        assert time.monotonic() < deadline, handler.seen
        time.sleep(0.01)
    with connect(server) as sock:
        sock.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[1] == b"GET /fast 0"
    assert handler.seen.count("/slow") == server.limits.workers
    handler.release.set()
    assert [read_answer(sock)[1] for sock in slow] == [b"GET /slow 0"] * len(slow)
    for sock in slow:
        sock.close()


def test_requests_pipelined_past_the_bound_are_answered_429_after_the_others(served) -> None:
    """One request answered and 16 queued behind it are served in order; the 18th is
    answered 429, then the connection closes."""
    server, handler = served
    with connect(server) as sock:
        sock.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(20)))
        answers = [read_answer(sock) for _ in range(18)]
        assert read_to_close(sock) == b""
    assert [body for _, body in answers[:17]] == [b"GET /p%d 0" % n for n in range(17)]
    head, body = answers[17]
    assert head.startswith(b"HTTP/1.1 429 ") and b"Connection: close" in head, head
    assert body == b"too many pipelined requests\n"
    assert handler.seen == [f"/p{n}" for n in range(17)]


def test_a_refused_request_is_answered_after_those_pipelined_before_it(served) -> None:
    server, _ = served
    with connect(server) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        assert [read_answer(sock)[1] for _ in range(2)] == [b"GET /a 0", b"GET /b 0"]
        assert read_to_close(sock).startswith(b"HTTP/1.1 413 ")


def test_at_the_cap_the_slowest_body_is_evicted_when_nothing_is_idle(served) -> None:
    """Four connections sending bodies, none idle: a newcomer evicts the one whose body
    came slowest (one byte), not the one that sent most of its body, nor the busy one."""
    server, handler = served
    busy = connect(server)
    busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    dripping, steady, other = connect(server), connect(server), connect(server)
    dripping.sendall(head + b"x")
    steady.sendall(head + b"x" * 90)
    other.sendall(head + b"x" * 50)
    deadline = time.monotonic() + 5
    while len(server._reading_body) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    with connect(server) as sock:
        sock.sendall(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[1] == b"GET /new 0"
    assert read_to_close(dripping) == b""
    steady.sendall(b"x" * 10)
    assert read_answer(steady)[1] == b"POST /b 100"
    handler.release.set()
    assert read_answer(busy)[1] == b"GET /slow 0"
    for sock in (busy, dripping, steady, other):
        sock.close()


def test_a_lane_bounded_per_client_answers_429_past_the_bound_to_that_client_only(
        served) -> None:
    """The /held lane lets a client address hold two requests: its third is answered 429 at
    once, while another address's request is queued (both workers are taken) and answered
    in turn; once the two are answered, room again."""
    server, handler = served
    held = [connect(server) for _ in range(2)]
    for sock in held:
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 5
    while handler.seen.count("/held") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with connect(server) as sock:
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 429 ") and b"Retry-After: 1" in head, head
    other = socket.create_connection(server.sock.getsockname()[:2], timeout=5,
                                     source_address=("127.0.0.2", 0))
    other.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    handler.release.set()
    assert [read_answer(sock)[1] for sock in [*held, other]] == [b"GET /held 0"] * 3
    with connect(server) as sock:
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[1] == b"GET /held 0"
    for sock in [*held, other]:
        sock.close()
