"""Guessing credentials on loopback, against the real exporter: an empty webhook secret, an
overlong password, user names told apart by the time of the answer, and a flood of wrong
passwords in front of Prometheus's first scrape after a restart."""

from __future__ import annotations

import base64
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from tests.support import ONLY_MESSAGES, ROOT, ExporterProcess, run_exporter

PASSWORD = "s3cret-for-prometheus"
# Cost 10, as `htpasswd -nBC 10` writes it (the README's example): tens of milliseconds.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
QUIET = "collectors:\n" + ONLY_MESSAGES


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[ExporterProcess]:
    """The exporter with one basic-auth user, prometheus, in --web.config.file."""
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    with run_exporter(args=["--web.config.file", str(web)], config=QUIET, tmp_path=tmp_path,
                      env={"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path)}) as exp:
        yield exp


def test_an_empty_webhook_token_file_is_refused_at_start(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "collectors": {"containers": {"enabled": False}, "logs": {"enabled": False},
                       "volume": {"enabled": False}, "volume_scan": {"enabled": False}},
        "actions": {"allowed": ["media_gc"], "state_dir": str(tmp_path / "state")},
        "webhook": {"bearer_token_file": str(empty)}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
    env.update({"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path),
                "WA_WEB_URL": "http://127.0.0.1:9", "WA_WEB_USERNAME": "a",
                "WA_WEB_PASSWORD": "b"})
    result = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(config),
                             "--web.listen-address", "127.0.0.1:0"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"bearer_token_file: '{empty}' is empty; fix: write the secret into it" in \
        result.stderr


def test_a_100_byte_password_is_refused_with_401(guarded: ExporterProcess) -> None:
    for user in ("prometheus", "stranger"):
        response = requests.get(guarded.url + "/metrics", auth=(user, "p" * 100), timeout=5)
        assert response.status_code == 401, (user, response.status_code)
    assert requests.get(guarded.url + "/metrics", auth=("prometheus", PASSWORD),
                        timeout=5).status_code == 200
    assert "Traceback" not in guarded.log


def test_unknown_users_are_answered_no_faster_than_wrong_passwords(
        guarded: ExporterProcess) -> None:
    """Each guess a new password, so none is answered from memory: the median time of an
    unknown user is at least a third of a known user's (it was a hundredth)."""
    def timed(user: str, attempt: int) -> float:
        started = time.monotonic()
        response = requests.get(guarded.url + "/metrics", auth=(user, f"guess-{attempt}"),
                                timeout=5)
        assert response.status_code == 401
        return time.monotonic() - started

    known, unknown = [], []
    for attempt in range(9):  # interleaved, so that load on the machine hits both alike
        known.append(timed("prometheus", attempt))
        unknown.append(timed(f"nobody-{attempt}", attempt))
    assert statistics.median(unknown) >= statistics.median(known) / 3, (known, unknown)


def guess(address: tuple[str, int], source: str, attempt: int) -> int:
    """One wrong password from ``source``, on a connection of its own: the status."""
    credentials = base64.b64encode(f"prometheus:wrong-{source}-{attempt}".encode()).decode()
    with socket.create_connection(address, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                     f"{credentials}\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(64)
    return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0


def test_a_flood_of_wrong_passwords_does_not_hold_up_the_first_scrape(
        guarded: ExporterProcess) -> None:
    """After a restart nothing is remembered: Prometheus's scrape needs bcrypt too. 64
    guessers on 127.0.0.2, each a new password as fast as answers come, for 3 s; the scrape
    from 127.0.0.1 is answered within 1 s, and most guesses are turned away (429) before
    bcrypt, so the guesser queues behind itself."""
    host, port = guarded.address.rsplit(":", 1)
    address = (host, int(port))
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def guesser(number: int) -> None:
        attempt = 0
        while not stop.is_set():
            attempt += 1
            try:
                statuses[guess(address, "127.0.0.2", number * 100_000 + attempt)] += 1
            except OSError:
                statuses[0] += 1

    guessers = [threading.Thread(target=guesser, args=(n,), daemon=True) for n in range(64)]
    for thread in guessers:
        thread.start()
    try:
        time.sleep(1.0)  # the flood is on
        started = time.monotonic()
        response = requests.get(guarded.url + "/metrics", auth=("prometheus", PASSWORD),
                                timeout=10)
        took = time.monotonic() - started
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in guessers:
            thread.join(15)
    assert response.status_code == 200
    assert took < 1.0, f"the scrape took {took:.2f}s behind {sum(statuses.values())} guesses"
    assert statuses[429] > statuses[401] > 0, statuses
