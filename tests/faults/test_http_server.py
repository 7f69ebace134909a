"""The HTTP server on the open network: clients that send half a request, trickle bytes, speak
TLS to the plain port or nothing to the TLS port, hold a thousand connections under a 1,024
file-descriptor limit, or leave before reading their answer. Loopback only."""

from __future__ import annotations

import os
import resource
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.certs_ca import make_pki
from tests.faults.harness import AUTH, config, wa_env
from tests.support import ExporterProcess, run_exporter
from tests.wa_standin.server import StandIn

ATTACKERS = 1000
OPEN_FILES = 1024
THREADS_LIMIT = 20
SCRAPE_LIMIT = 1.0  # seconds


@pytest.fixture
def wa_api() -> Iterator[StandIn]:
    with StandIn() as standin:
        yield standin


@contextmanager
def exporter(tmp_path: Path, wa_api: StandIn, *args: str,
             open_files: int | None = None) -> Iterator[ExporterProcess]:
    """The exporter with the webhook on (so its threads and routes are all there)."""
    with run_exporter(args=list(args), env=wa_env(wa_api), tmp_path=tmp_path,
                      config=config(tmp_path, allowed=("media_gc",)),
                      open_files=open_files) as exp:
        yield exp


def address(exp: ExporterProcess) -> tuple[str, int]:
    host, port = exp.address.rsplit(":", 1)
    return host, int(port)


def timed_scrape(exp: ExporterProcess) -> float:
    """Seconds a fresh connection takes to get a whole /metrics answer."""
    started = time.monotonic()
    response = requests.get(exp.url + "/metrics", timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and "whatsapp_exporter_build_info" in response.text
    return elapsed


def threads(exp: ExporterProcess) -> int:
    return len(os.listdir(f"/proc/{exp.proc.pid}/task"))


def closed_after(sock: socket.socket, limit: float, trickle: bytes = b"",
                 every: float = 0.1) -> float | None:
    """Seconds until the server closes ``sock`` (EOF or reset), sending ``trickle`` every
    ``every`` seconds meanwhile and discarding any answer; None if still open at ``limit``."""
    started = time.monotonic()
    sock.setblocking(False)
    while time.monotonic() - started < limit:
        readable, _, _ = select.select([sock], [], [], every)
        try:
            if readable and not sock.recv(65536):
                return time.monotonic() - started
            if trickle:
                sock.send(trickle)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:  # reset, broken pipe: closed by the server
            return time.monotonic() - started
    return None


@contextmanager
def raised_open_files(wanted: int) -> Iterator[None]:
    """This test process needs more sockets than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_thousand_half_sent_requests_under_a_1024_fd_limit_do_not_starve_metrics(
        tmp_path: Path, wa_api: StandIn) -> None:
    """Half-sent headers held open (a timeout long enough that only eviction can help):
    a new scrape evicts the oldest of them and answers at once, during and after."""
    attackers: list[socket.socket] = []
    with raised_open_files(ATTACKERS + 512), \
            exporter(tmp_path, wa_api, "--web.read-header-timeout", "2m",
                     "--web.max-connections", "100000", open_files=OPEN_FILES) as exp:
        before = timed_scrape(exp)
        try:
            deadline = time.monotonic() + 60
            for _ in range(ATTACKERS):
                assert time.monotonic() < deadline, f"only {len(attackers)} connected in 60 s"
                sock = socket.create_connection(address(exp), timeout=5)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Half: ")
                attackers.append(sock)
            during = [timed_scrape(exp) for _ in range(5)]
            threads_during = threads(exp)
        finally:
            for sock in attackers:
                sock.close()
        after = [timed_scrape(exp) for _ in range(5)]
        assert exp.proc.poll() is None
    assert max(during) < SCRAPE_LIMIT, (before, during)
    assert max(after) < SCRAPE_LIMIT, after
    assert threads_during <= THREADS_LIMIT
    assert "Traceback" not in exp.log and "level=error" not in exp.log


def test_senders_at_300_bytes_per_second_are_cut_at_the_timeout(tmp_path: Path,
                                                              wa_api: StandIn) -> None:
    trickle = b"a" * 30  # every 0.1 s: 300 bytes/s
    with exporter(tmp_path, wa_api, "--web.read-header-timeout", "1s",
                  "--web.read-timeout", "3s") as exp:
        with socket.create_connection(address(exp), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            headers_cut = closed_after(sock, 10, trickle)
        with socket.create_connection(address(exp), timeout=5) as sock:
            sock.sendall(b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            body_cut = closed_after(sock, 10, trickle)
        assert timed_scrape(exp) < SCRAPE_LIMIT
    assert headers_cut is not None and 0.9 <= headers_cut < 2.5, headers_cut
    assert body_cut is not None and 2.9 <= body_cut < 4.5, body_cut


def client_hello() -> bytes:
    """The first bytes a TLS client sends."""
    context = ssl.create_default_context()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                           server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("stray", [pytest.param(client_hello(), id="tls-client-hello"),
                                   pytest.param(b"GET /metrics\r\n", id="http-0.9"),
                                   pytest.param(b"\x16\x03\x01", id="three-bytes")])
def test_stray_bytes_on_the_plain_port_are_closed_within_the_timeout(
        tmp_path: Path, wa_api: StandIn, stray: bytes) -> None:
    with exporter(tmp_path, wa_api, "--web.read-header-timeout", "2s") as exp:
        with socket.create_connection(address(exp), timeout=5) as sock:
            sock.sendall(stray)
            closed = closed_after(sock, 6)
        assert timed_scrape(exp) < SCRAPE_LIMIT
    assert closed is not None and closed < 3, closed


def test_stalled_tls_handshakes_are_dropped_and_idle_connections_closed(
        tmp_path: Path, wa_api: StandIn) -> None:
    pki = make_pki(tmp_path / "pki")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n"
                   f"  key_file: {pki.server_key}\n")
    with exporter(tmp_path, wa_api, "--web.config.file", str(web),
                  "--web.tls-handshake-timeout", "1s", "--web.idle-timeout", "1s") as exp:
        with socket.create_connection(address(exp), timeout=5) as silent, \
                socket.create_connection(address(exp), timeout=5) as half:
            half.sendall(client_hello()[:20])
            silent_closed = closed_after(silent, 6)
            half_closed = closed_after(half, 6)
        https = exp.url.replace("http://", "https://")
        context = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection(address(exp), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = tls.recv(65536)
            started = time.monotonic()
            tls.settimeout(6)
            try:
                while tls.recv(65536):
                    pass
            except OSError:
                pass
            idle_closed = time.monotonic() - started
        assert requests.get(https + "/-/healthy", verify=pki.ca, timeout=5).ok
    assert silent_closed is not None and silent_closed < 2.5, silent_closed
    assert half_closed is not None and half_closed < 2.5, half_closed
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert 0.9 <= idle_closed < 2.5, idle_closed


def test_a_client_that_leaves_before_reading_metrics_costs_no_error(
        tmp_path: Path, wa_api: StandIn) -> None:
    with exporter(tmp_path, wa_api) as exp:
        for _ in range(50):
            sock = socket.create_connection(address(exp), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            # Reset at once, not a polite FIN: the answer has nowhere to go.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        assert timed_scrape(exp) < SCRAPE_LIMIT
    assert "Traceback" not in exp.log and "level=error" not in exp.log


SLOW_BODIES = 600
SCRAPES = 20
SCRAPE_WITHIN = 3.0  # seconds


def slow_body_request(kind: str) -> bytes:
    """The head of a request whose body of 100,000 bytes is to come a byte a second: a GET
    of /metrics (no credentials needed), or a webhook call holding the token."""
    if kind == "get":
        return (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    return (b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")


@pytest.mark.parametrize(("actions", "kind"), [(False, "get"), (True, "get"), (True, "post")],
                         ids=["default-exporter", "actions-get", "actions-post-with-token"])
def test_600_slow_bodies_leave_metrics_answering(tmp_path: Path, wa_api: StandIn,
                                                 actions: bool, kind: str) -> None:
    """600 connections each send a request head announcing 100,000 bytes of body, then a
    byte a second, past the cap of 512 connections: at least 19 of 20 scrapes still answer
    within 3 s. A GET's body is refused from its headers; bodies a webhook does read are
    evicted, the slowest first, when a new connection needs the slot."""
    if actions:
        run = run_exporter(env=wa_env(wa_api), tmp_path=tmp_path,
                           config=config(tmp_path, allowed=("media_gc",)))
    else:  # no --config.file at all, as the README's first command
        run = run_exporter(env={"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path),
                                "DOCKER_HOST": "tcp://127.0.0.1:1"})
    senders: list[socket.socket] = []
    stop = threading.Event()

    def drip() -> None:  # a byte a second on every connection still open
        while not stop.wait(1.0):
            for sock in list(senders):
                try:
                    sock.send(b"x")
                except OSError:
                    senders.remove(sock)

    with raised_open_files(SLOW_BODIES + 256), run as exp:
        for _ in range(SLOW_BODIES):
            sock = socket.create_connection(address(exp), timeout=5)
            sock.sendall(slow_body_request(kind))
            senders.append(sock)
        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        answered = []
        try:
            time.sleep(1.0)  # the first drips are in
            for _ in range(SCRAPES):
                started = time.monotonic()
                try:
                    response = requests.get(exp.url + "/metrics", timeout=SCRAPE_WITHIN)
                except requests.RequestException:
                    continue
                if response.status_code == 200 and \
                        time.monotonic() - started <= SCRAPE_WITHIN:
                    answered.append(time.monotonic() - started)
        finally:
            stop.set()
            dripper.join(5)
            for sock in senders:
                sock.close()
        assert exp.proc.poll() is None
    assert len(answered) >= SCRAPES - 1, f"{len(answered)} of {SCRAPES} scrapes answered"
    assert "Traceback" not in exp.log
