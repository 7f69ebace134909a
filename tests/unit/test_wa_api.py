"""The WA API client against the in-process stand-in (a real HTTP server): login and token
reuse, expiry, 401, retries, timeouts, TLS, answer parsing, and that secrets never leak."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from exporter.config import WaApiSettings
from exporter.sources.wa_api import (
    GcStarted,
    WaApiClient,
    WaAuthError,
    WaConnectError,
    WaHttpError,
    WaResponseError,
    WaTimeoutError,
    WaTlsError,
)
from tests.wa_standin.certs import make_self_signed_cert
from tests.wa_standin.server import StandIn

PASSWORD = "s3cr3t-Pa55"


def settings(url: str, **options: Any) -> WaApiSettings:
    values = {"WA_WEB_URL": url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": PASSWORD,
              "retry_backoff": 0.01, "connect_timeout": 2, "read_timeout": 5, **options}
    return WaApiSettings.model_validate(values)


@pytest.fixture
def wa() -> Iterator[StandIn]:
    with StandIn(users={"admin": PASSWORD}) as standin:
        yield standin


@pytest.fixture
def client(wa: StandIn) -> Iterator[WaApiClient]:
    api = WaApiClient(settings(wa.url))
    yield api
    api.close()


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


# -- login and tokens -------------------------------------------------------------------------

def test_one_login_serves_many_calls(wa: StandIn, client: WaApiClient) -> None:
    for _ in range(3):
        client.health()
    stats = wa.stats()
    assert stats["logins"] == 1
    assert stats["requests"] == {"login": 1, "health": 3}


def test_token_near_its_expiry_is_replaced_by_one_fresh_login() -> None:
    clock = Clock()
    with StandIn(users={"admin": PASSWORD}, token_ttl=3600) as wa:
        api = WaApiClient(settings(wa.url, token_refresh_margin=300), clock=clock)
        api.health()
        clock.now += dt.timedelta(seconds=3600 - 301)
        api.health()
        assert wa.stats()["logins"] == 1
        clock.now += dt.timedelta(seconds=2)  # inside the margin before expires_after
        wa.token_ttl = 7 * 86400  # the next token outlives the clock's jump
        api.health()
        api.health()
        stats = wa.stats()
    # The stand-in still took the old token: the client renewed it on its own.
    assert (stats["logins"], stats["unauthorized"]) == (2, 0)


def test_refused_token_means_one_fresh_login_and_one_repeat(wa: StandIn,
                                                            client: WaApiClient) -> None:
    client.health()
    wa.expire_tokens()
    assert client.health() == {"gateway_status": "connected"}
    stats = wa.stats()
    assert (stats["logins"], stats["unauthorized"], stats["requests"]["health"]) == (2, 1, 3)


def test_token_refused_after_a_fresh_login_is_an_auth_error(wa: StandIn,
                                                            client: WaApiClient) -> None:
    wa.fail_next("health", count=5, status=401, code=1005, title="Access denied")
    with pytest.raises(WaAuthError) as caught:
        client.health()
    assert (caught.value.status, caught.value.code) == (401, 1005)
    assert "fresh token" in str(caught.value)
    assert wa.stats()["logins"] == 2 and wa.stats()["requests"]["health"] == 2


def test_wrong_password_is_an_auth_error_without_retry(wa: StandIn) -> None:
    api = WaApiClient(settings(wa.url, WA_WEB_PASSWORD="wrong-" + PASSWORD))
    with pytest.raises(WaAuthError) as caught:
        api.health()
    error = caught.value
    assert (error.kind, error.status, error.code) == ("auth", 401, 1005)
    assert "WA_WEB_USERNAME and WA_WEB_PASSWORD" in str(error)
    assert wa.stats()["login_failures"] == 1


def test_concurrent_calls_share_one_login_and_one_relogin(wa: StandIn,
                                                          client: WaApiClient) -> None:
    def burst() -> None:
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def call() -> None:
            start.wait()
            try:
                client.health()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not errors

    burst()
    assert wa.stats()["logins"] == 1
    wa.expire_tokens()
    burst()
    assert wa.stats()["logins"] == 2


# -- retries and timeouts ---------------------------------------------------------------------

def test_5xx_is_retried_then_raised_with_the_wa_error(wa: StandIn, client: WaApiClient) -> None:
    wa.fail_next("message_gc", count=3, status=500, code=1014, title="Internal error",
                 details="GC backend unavailable")
    with pytest.raises(WaHttpError) as caught:
        client.message_gc()
    error = caught.value
    assert (error.kind, error.status, error.code, error.title, error.details) == (
        "http", 500, 1014, "Internal error", "GC backend unavailable")
    assert error.to_dict() == {
        "kind": "http", "status": 500, "code": 1014, "title": "Internal error",
        "details": "GC backend unavailable", "message": str(error)}
    assert wa.stats()["requests"]["message_gc"] == 3
    assert wa.stats()["message_gc_calls"] == 0


def test_5xx_then_success_returns_the_answer(wa: StandIn, client: WaApiClient,
                                             caplog: pytest.LogCaptureFixture) -> None:
    wa.fail_next("message_gc", count=2, status=503, code=1014)
    with caplog.at_level(logging.WARNING, logger="exporter.sources.wa_api"):
        assert client.message_gc() == GcStarted({None: "processing"})
    assert wa.stats()["requests"]["message_gc"] == 3
    delays = [getattr(r, "retry_in_seconds", None) for r in caplog.records
              if r.getMessage().endswith("retrying")]
    assert delays == [0.01, 0.02]


def test_4xx_is_not_retried(wa: StandIn, client: WaApiClient) -> None:
    wa.fail_next("message_gc", count=3, status=400, code=1000, title="Generic error")
    with pytest.raises(WaHttpError) as caught:
        client.message_gc()
    assert (caught.value.status, caught.value.code) == (400, 1000)
    assert wa.stats()["requests"]["message_gc"] == 1


def test_refused_connection_is_retried_then_a_connect_error(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = WaApiClient(settings(f"http://127.0.0.1:{port}"))
    with caplog.at_level(logging.WARNING, logger="exporter.sources.wa_api"), \
            pytest.raises(WaConnectError) as caught:
        api.health()
    assert caught.value.kind == "connect"
    assert "refused" in str(caught.value).lower() and " object at 0x" not in str(caught.value)
    assert sum(r.getMessage().endswith("retrying") for r in caplog.records) == 2


def test_hung_call_is_a_timeout_and_not_repeated(wa: StandIn) -> None:
    api = WaApiClient(settings(wa.url, read_timeout=0.3))
    api.health()
    wa.hang("message_gc")
    with pytest.raises(WaTimeoutError) as caught:
        api.message_gc()
    assert caught.value.kind == "timeout" and "0.3s" in str(caught.value)
    assert wa.stats()["requests"]["message_gc"] == 1


def test_slow_answer_is_a_timeout(wa: StandIn) -> None:
    api = WaApiClient(settings(wa.url, read_timeout=0.2))
    wa.slow("login", 2)
    with pytest.raises(WaTimeoutError):
        api.health()


def test_an_answer_trickled_a_byte_at_a_time_is_a_timeout_at_the_whole_deadline(
        wa: StandIn) -> None:
    """Headers at once, then a byte of the body every 0.2 s: no read waits read_timeout
    (0.5 s), but the answer must be in within connect_timeout + read_timeout."""
    api = WaApiClient(settings(wa.url, connect_timeout=0.3, read_timeout=0.5))
    api.health()
    wa.trickle("message_gc", 0.2)
    started = time.monotonic()
    with pytest.raises(WaTimeoutError) as caught:
        api.message_gc()
    assert 0.7 < time.monotonic() - started < 2.0
    assert "did not arrive in full within 0.8s" in str(caught.value)
    assert wa.stats()["requests"]["message_gc"] == 1  # a timeout is not repeated
    wa.trickle("message_gc", 0)
    assert api.media_gc().processing  # the client goes on


def test_headers_trickled_a_byte_at_a_time_are_a_timeout_too() -> None:
    """A server that sends its status line and headers a byte every 0.1 s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 1000:
                if stop.wait(0.1):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    api = WaApiClient(settings(f"http://127.0.0.1:{server.getsockname()[1]}",
                               connect_timeout=0.3, read_timeout=0.5))
    try:
        started = time.monotonic()
        with pytest.raises(WaTimeoutError, match="did not arrive in full"):
            api.health()
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        server.close()


# -- TLS --------------------------------------------------------------------------------------

@pytest.fixture
def tls_wa(tmp_path: Path) -> Iterator[tuple[StandIn, Path]]:
    cert, key = make_self_signed_cert(tmp_path)
    with StandIn(users={"admin": PASSWORD}, tls_cert=cert, tls_key=key) as standin:
        yield standin, cert


def test_self_signed_certificate_verified_through_the_ca_file(
        tls_wa: tuple[StandIn, Path]) -> None:
    wa, cert = tls_wa
    assert wa.url.startswith("https://")
    api = WaApiClient(settings(wa.url, WA_WEB_CA_FILE=str(cert)))
    assert api.health() == {"gateway_status": "connected"}


def test_unverifiable_certificate_is_a_tls_error_without_retry(
        tls_wa: tuple[StandIn, Path], caplog: pytest.LogCaptureFixture) -> None:
    wa, _ = tls_wa
    api = WaApiClient(settings(wa.url))
    with caplog.at_level(logging.WARNING), pytest.raises(WaTlsError) as caught:
        api.health()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "WA_WEB_CA_FILE" in str(caught.value)
    assert not [r for r in caplog.records if r.getMessage().endswith("retrying")]
    assert wa.stats()["logins"] == 0


def test_verify_false_works_and_warns_once(tls_wa: tuple[StandIn, Path],
                                          caplog: pytest.LogCaptureFixture) -> None:
    wa, _ = tls_wa
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        api = WaApiClient(settings(wa.url, WA_WEB_VERIFY="false"))
        for _ in range(3):
            api.health()
    warned = [r for r in caplog.records if "not verified" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert not [w for w in raised if "Unverified HTTPS" in str(w.message)]


# -- answers ----------------------------------------------------------------------------------

def test_single_node_answers(client: WaApiClient) -> None:
    assert client.message_gc().nodes == {None: "processing"}
    assert client.media_gc().processing == [None]
    assert client.health() == {"gateway_status": "connected"}


def test_multiconnect_answers_are_per_node() -> None:
    with StandIn(users={"admin": PASSWORD}, multiconnect=["wacore1", "wacore2"]) as wa:
        api = WaApiClient(settings(wa.url))
        started = api.message_gc()
        health = api.health()
    assert started.nodes == {node: "processing" for node in wa.node_ids}
    assert started.processing == wa.node_ids
    assert wa.node_ids[0].startswith("wacore1:")
    assert {n: h["role"] for n, h in health.items() if n in wa.node_ids} == {
        n: "coreapp" for n in wa.node_ids}


def test_media_gc_while_one_runs_is_a_409(wa: StandIn, client: WaApiClient) -> None:
    wa.media_gc_delay(30)
    client.media_gc()
    with pytest.raises(WaHttpError) as caught:
        client.media_gc()
    assert (caught.value.status, caught.value.code) == (409, 1015)
    assert wa.stats()["requests"]["media_gc"] == 2


# -- a webapp that answers oddly, and secret hygiene ------------------------------------------

TOKEN = "tok-Zx81-very-secret"
Answer = tuple[int, Any]


class OddWebapp:
    """A real HTTP server whose answers the test sets per path; it can echo credentials, or
    close the connection without answering."""

    def __init__(self, answers: Mapping[str, Callable[[dict[str, str]], Answer | None]]) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                answer = answers[self.path](dict(self.headers.items()))
                if answer is None:  # hang up without a word
                    self.close_connection = True
                    return
                status, body = answer
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=owner.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> OddWebapp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def login_ok(headers: dict[str, str]) -> Answer:
    return 200, {"users": [{"token": TOKEN, "expires_after": "2099-01-01 00:00:00+00:00"}]}


def echo_credentials(headers: dict[str, str]) -> Answer:
    details = f"you sent {headers.get('Authorization')} and password {PASSWORD}"
    return 500, {"errors": [{"code": 1014, "title": f"Internal error {TOKEN}",
                             "details": details}]}


def test_secrets_never_appear_in_errors_logs_or_repr(
        caplog: pytest.LogCaptureFixture) -> None:
    answers = {"/v1/users/login": login_ok, "/v1/services/message/gc": echo_credentials}
    with OddWebapp(answers) as webapp, caplog.at_level(logging.DEBUG):
        config = settings(webapp.url)
        api = WaApiClient(config)
        with pytest.raises(WaHttpError) as caught:
            api.message_gc()
    shown = [str(caught.value), json.dumps(caught.value.to_dict()), repr(caught.value),
             repr(api), repr(config), caplog.text]
    for text in shown:
        assert PASSWORD not in text and TOKEN not in text
    assert "Bearer <secret>" in str(caught.value) and caught.value.code == 1014
    assert "<secret>" in repr(config)


@pytest.mark.parametrize(("answers", "words"), [
    ({"/v1/users/login": lambda h: (200, {"users": []})}, "no token"),
    ({"/v1/users/login": lambda h: (200, b"<html>login</html>")}, "not a JSON object"),
    ({"/v1/users/login": login_ok,
      "/v1/services/message/gc": lambda h: (200, {"services": {"message": {}}})},
     "no message GC status"),
    ({"/v1/users/login": login_ok,
      "/v1/services/message/gc": lambda h: (200, {"services": {"message": {"gc": {
          "wacore1:1": {"status": "processing"}, "wacore2:2": "processing"}}}})},
     "no message GC status"),
])
def test_answers_that_are_not_the_wa_api_are_response_errors(
        answers: Mapping[str, Callable[[dict[str, str]], Answer]], words: str) -> None:
    with OddWebapp(answers) as webapp, pytest.raises(WaResponseError) as caught:
        WaApiClient(settings(webapp.url)).message_gc()
    assert words in str(caught.value) and caught.value.kind == "response"
    assert TOKEN not in str(caught.value)


def test_a_connection_closed_without_an_answer_is_retried_as_a_refused_one_is(
        caplog: pytest.LogCaptureFixture) -> None:
    """A connection error, however late, unlike a timeout (see
    test_hung_call_is_a_timeout_and_not_repeated): the GC call is tried 3 times."""
    tries = []

    def hang_up(headers: dict[str, str]) -> None:
        tries.append(headers)

    answers = {"/v1/users/login": login_ok, "/v1/services/message/gc": hang_up}
    with OddWebapp(answers) as webapp, pytest.raises(WaConnectError) as caught, \
            caplog.at_level(logging.WARNING, logger="exporter.sources.wa_api"):
        WaApiClient(settings(webapp.url)).message_gc()
    assert len(tries) == 3 and caught.value.kind == "connect"
    assert [getattr(r, "retry_in_seconds", None) for r in caplog.records
            if r.getMessage().endswith("retrying")] == [0.01, 0.02]


def test_an_answer_broken_off_after_its_headers_is_not_asked_for_again() -> None:
    """The webapp took the GC request and began to answer: a connection error, and the
    request is not sent a second time."""
    server = socket.create_server(("127.0.0.1", 0))
    gc_requests = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                if request.startswith(b"POST"):
                    body = json.dumps(login_ok({})[1]).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                else:
                    gc_requests.append(request)
                    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"services"')

    threading.Thread(target=serve, daemon=True).start()
    api = WaApiClient(settings(f"http://127.0.0.1:{server.getsockname()[1]}"))
    try:
        with pytest.raises(WaConnectError, match="IncompleteRead"):
            api.message_gc()
    finally:
        server.close()
    assert len(gc_requests) == 1


def test_expiry_without_a_date_keeps_the_token_until_a_401() -> None:
    logins = []

    def login(headers: dict[str, str]) -> Answer:
        logins.append(1)
        return 200, {"users": [{"token": TOKEN}]}

    answers = {"/v1/users/login": login, "/v1/health": lambda h: (200, {"health": {}})}
    with OddWebapp(answers) as webapp:
        api = WaApiClient(settings(webapp.url))
        api.health()
        api.health()
    assert len(logins) == 1

