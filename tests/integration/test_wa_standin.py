"""The WA client stand-in (tests/wa_standin) behaves like the product spec says.

Runs against real MariaDB (127.0.0.1:3306) and PostgreSQL (127.0.0.1:5432) plus SQLite; each
database test creates and drops its own database.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.wa_standin.certs import make_self_signed_cert
from tests.wa_standin.receiver import CallbackReceiver
from tests.wa_standin.schema import create_messages_table, insert_messages, messages
from tests.wa_standin.server import StandIn, node_id

REPO = Path(__file__).resolve().parents[2]
META = {"api_status": "stable", "version": "2.53.2"}
MYSQL_SERVER = "mysql+pymysql://root@127.0.0.1:3306/"
PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


# -- databases ------------------------------------------------------------------------------

def _server_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.skip(f"database server not reachable: {exc}")
    return engine


@pytest.fixture
def mysql_url() -> Iterator[str]:
    name = f"wastandin_test_{uuid.uuid4().hex[:10]}"
    server = _server_engine(MYSQL_SERVER)
    with server.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield f"{MYSQL_SERVER}{name}"
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        server.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"wastandin_test_{uuid.uuid4().hex[:10]}"
    server = _server_engine(PG_SERVER)
    with server.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        server.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wa.db'}"


@pytest.fixture(params=[
    "sqlite",
    pytest.param("mysql", marks=pytest.mark.mysql),
    pytest.param("postgres", marks=pytest.mark.postgres),
])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def fill(url: str, count: int) -> int:
    """Create and fill ``messages``; return how many rows are ``read``."""
    engine = sa.create_engine(url)
    try:
        create_messages_table(engine)
        insert_messages(engine, count)
        return count_by_status(engine)["read"]
    finally:
        engine.dispose()


def count_by_status(engine_or_url: sa.Engine | str) -> dict[str, int]:
    engine = (sa.create_engine(engine_or_url) if isinstance(engine_or_url, str)
              else engine_or_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(messages.c.status, sa.func.count())
                                .group_by(messages.c.status)).all()
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
    counts = {"read": 0, **{status: n for status, n in rows}}
    return counts


# -- helpers --------------------------------------------------------------------------------

def login(wa: StandIn, user: str = "admin", password: str = "secret", **kw: object) -> str:
    r = requests.post(f"{wa.url}/v1/users/login", auth=(user, password), timeout=5, **kw)
    assert r.status_code == 200, r.text
    return r.json()["users"][0]["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put_gc(wa: StandIn, token: str, kind: str = "message", **kw: object) -> requests.Response:
    kw.setdefault("timeout", 5)
    return requests.put(f"{wa.url}/v1/services/{kind}/gc", headers=bearer(token), **kw)


def admin(wa: StandIn, action: str, **kwargs: object) -> object:
    r = requests.post(f"{wa.url}/_standin/{action}", json=kwargs, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def assert_wa_error(r: requests.Response, status: int, code: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["meta"] == META
    assert [e["code"] for e in body["errors"]] == [code]
    assert set(body["errors"][0]) == {"code", "title", "details"}
    return body


@pytest.fixture
def rx() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as receiver:
        yield receiver


# -- login and tokens -----------------------------------------------------------------------

def test_login_token_reuse_and_expiry() -> None:
    with StandIn(users={"admin": "secret"}) as wa:
        before = dt.datetime.now(dt.UTC)
        r = requests.post(f"{wa.url}/v1/users/login", auth=("admin", "secret"), timeout=5)
        assert r.status_code == 200
        (user,) = r.json()["users"]
        assert set(r.json()) == {"users"} and set(user) == {"token", "expires_after"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", user["expires_after"])
        expires = dt.datetime.strptime(user["expires_after"], "%Y-%m-%d %H:%M:%S%z")
        assert abs(expires - (before + dt.timedelta(days=7))) < dt.timedelta(seconds=5)

        for _ in range(3):  # one token serves many calls
            r = requests.get(f"{wa.url}/v1/health", headers=bearer(user["token"]), timeout=5)
            assert r.status_code == 200
            assert r.json() == {"health": {"gateway_status": "connected"}, "meta": META}

        assert_wa_error(requests.post(f"{wa.url}/v1/users/login", auth=("admin", "wrong"),
                                      timeout=5), 401, 1005)
        assert_wa_error(requests.post(f"{wa.url}/v1/users/login", timeout=5), 401, 1005)
        assert_wa_error(requests.get(f"{wa.url}/v1/health", timeout=5), 401, 1005)
        assert_wa_error(requests.get(f"{wa.url}/v1/health", headers=bearer("nope"), timeout=5),
                        401, 1005)

        admin(wa, "expire_tokens")
        assert_wa_error(put_gc(wa, user["token"]), 401, 1005)
        fresh = login(wa)
        assert requests.get(f"{wa.url}/v1/health", headers=bearer(fresh), timeout=5).ok

        stats = wa.stats()
        assert stats["logins"] == 2 and stats["login_failures"] == 2
        assert stats["unauthorized"] == 3
        assert stats["requests"] == {"login": 4, "health": 6, "message_gc": 1}
        assert stats["message_gc_calls"] == 0


def test_token_ttl() -> None:
    with StandIn(token_ttl=3600) as wa:
        r = requests.post(f"{wa.url}/v1/users/login", auth=("admin", "secret"), timeout=5)
        expires = dt.datetime.strptime(r.json()["users"][0]["expires_after"],
                                       "%Y-%m-%d %H:%M:%S%z")
        assert abs(expires - dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).total_seconds() < 5
    with StandIn(token_ttl=0) as wa:  # expired the moment it is issued
        assert_wa_error(requests.get(f"{wa.url}/v1/health", headers=bearer(login(wa)),
                                     timeout=5), 401, 1005)


def test_unknown_path_and_method() -> None:
    with StandIn() as wa:
        assert_wa_error(requests.get(f"{wa.url}/v1/nothing", timeout=5), 404, 1006)
        assert_wa_error(requests.get(f"{wa.url}/v1/services/message/gc", timeout=5), 405, 1025)
        r = requests.post(f"{wa.url}/_standin/slow", json={"endpoint": "bogus", "seconds": 1},
                          timeout=5)
        assert r.status_code == 400 and "unknown endpoint" in r.json()["error"]


# -- message GC -----------------------------------------------------------------------------

def test_message_gc_deletes_read_rows_and_calls_back(db_url: str, rx: CallbackReceiver) -> None:
    n_read = fill(db_url, 3000)
    before = count_by_status(db_url)
    with StandIn(db_url, callback_url=rx.url, gc_batch_size=500,
                 callback_headers={"Authorization": "Bearer cb-secret"}) as wa:
        r = put_gc(wa, login(wa))
        assert r.status_code == 200
        assert r.json() == {"services": {"message": {"gc": {"status": "processing"}}},
                            "meta": META}
        cb = rx.get(timeout=10)
        assert cb.body == {"services": [{"message": {"gc": {"messages_deleted": n_read,
                                                             "status": "complete"}}}]}
        assert cb.headers["Authorization"] == "Bearer cb-secret"
        assert cb.headers["Content-Type"] == "application/json"
        assert wa.wait_gc_idle(10)
        stats = wa.stats()
        assert stats["rows_deleted"] == n_read and stats["callbacks_sent"] == 1
        assert stats["message_gc_calls"] == 1

        after = count_by_status(db_url)
        assert after == {**before, "read": 0}

        put_gc(wa, login(wa)).raise_for_status()  # nothing left to delete
        assert rx.get(timeout=10).body["services"][0]["message"]["gc"]["messages_deleted"] == 0


@pytest.mark.parametrize("engine", [pytest.param("mysql", marks=pytest.mark.mysql),
                                    pytest.param("postgres", marks=pytest.mark.postgres)])
def test_message_gc_big_table(engine: str, request: pytest.FixtureRequest,
                              rx: CallbackReceiver) -> None:
    """Default 10k-row DELETE batches on a table one batch cannot clear."""
    url = request.getfixturevalue(f"{engine}_url")
    n_read = fill(url, 45_000)
    assert n_read > 20_000
    with StandIn(url, callback_url=rx.url) as wa:
        put_gc(wa, login(wa)).raise_for_status()
        gc = rx.get(timeout=20).body["services"][0]["message"]["gc"]
        assert gc == {"messages_deleted": n_read, "status": "complete"}
        assert wa.stats()["delete_batches"] == -(-n_read // 10_000)
    assert count_by_status(url)["read"] == 0


def test_message_gc_max_rows_per_round(db_url: str, rx: CallbackReceiver) -> None:
    n_read = fill(db_url, 1000)
    with StandIn(db_url, callback_url=rx.url, gc_max_rows_per_round=200, gc_batch_size=150) as wa:
        token = login(wa)
        deleted = []
        while not deleted or deleted[-1]:
            put_gc(wa, token).raise_for_status()
            deleted.append(rx.get(timeout=10).body["services"][0]["message"]["gc"]
                           ["messages_deleted"])
        assert sum(deleted) == n_read
        assert all(n == 200 for n in deleted[:-2]) and 0 < deleted[-2] <= 200
        assert count_by_status(db_url)["read"] == 0


def test_multiconnect_shape_and_per_node_callbacks(sqlite_url: str, rx: CallbackReceiver) -> None:
    n_read = fill(sqlite_url, 1000)
    names = ["wacore1", "wacore2", "wacore3"]
    with StandIn(sqlite_url, multiconnect=names, callback_url=rx.url) as wa:
        assert wa.node_ids == [node_id(n) for n in names]
        assert all(re.fullmatch(r"wacore\d:[0-9a-f]{12}", n) for n in wa.node_ids)
        token = login(wa)
        r = put_gc(wa, token)
        assert r.json() == {"services": {"message": {"gc": {
            n: {"status": "processing"} for n in wa.node_ids}}}, "meta": META}

        callbacks = [cb.body["services"][0]["message"]["gc"] for cb in rx.get_many(3)]
        assert sorted(c["node"] for c in callbacks) == sorted(wa.node_ids)
        assert all(set(c) == {"messages_deleted", "status", "node"} for c in callbacks)
        assert {c["status"] for c in callbacks} == {"complete"}
        assert sum(c["messages_deleted"] for c in callbacks) == n_read
        assert max(c["messages_deleted"] for c in callbacks) - min(
            c["messages_deleted"] for c in callbacks) <= 1

        health = requests.get(f"{wa.url}/v1/health", headers=bearer(token), timeout=5).json()
        assert {n: health["health"][n]["gateway_status"] for n in wa.node_ids} == {
            n: "connected" for n in wa.node_ids}
        assert wa.wait_gc_idle(5) and wa.stats()["callbacks_sent"] == 3


@pytest.mark.mysql
def test_gc_fail_mode_mysql(mysql_url: str, rx: CallbackReceiver) -> None:
    fill(mysql_url, 500)
    before = count_by_status(mysql_url)
    with StandIn(mysql_url, callback_url=rx.url, multiconnect=["wacore1", "wacore2"]) as wa:
        admin(wa, "gc_fail", details="disk I/O error")
        put_gc(wa, login(wa)).raise_for_status()
        for cb in rx.get_many(2):
            gc = cb.body["services"][0]["message"]["gc"]
            assert gc["status"] == "failed" and gc["node"] in wa.node_ids
            assert gc["errors"] == [{"code": 1014, "details": "disk I/O error"}]
        assert wa.wait_gc_idle(5) and wa.stats()["gc_rounds_failed"] == 1
        assert count_by_status(mysql_url) == before


def test_gc_fail_rounds_reports_errors_for_n_rounds_then_clean_ones(
        sqlite_url: str, rx: CallbackReceiver) -> None:
    n_read = fill(sqlite_url, 1000)
    with StandIn(sqlite_url, callback_url=rx.url, gc_max_rows_per_round=100,
                 multiconnect=["wacore1", "wacore2"]) as wa:
        token = login(wa)
        admin(wa, "gc_fail_rounds", rounds=2, details="GC did not finish")
        error = {"code": 1014, "details": "GC did not finish"}
        for _ in range(2):  # failed: nothing deleted, every node reports the error
            put_gc(wa, token).raise_for_status()
            gcs = [cb.body["services"][0]["message"]["gc"] for cb in rx.get_many(2)]
            assert sorted(gc["node"] for gc in gcs) == sorted(wa.node_ids)
            assert all(gc["status"] == "failed" and gc["errors"] == [error] for gc in gcs)
        assert count_by_status(sqlite_url)["read"] == n_read
        put_gc(wa, token).raise_for_status()
        gcs = [cb.body["services"][0]["message"]["gc"] for cb in rx.get_many(2)]
        assert all(set(gc) == {"messages_deleted", "status", "node"} for gc in gcs)
        assert sum(gc["messages_deleted"] for gc in gcs) == 100

        # complete with errors: the rows go, the callback still lists the error.
        admin(wa, "gc_fail_rounds", rounds=1, status="complete", details="GC did not finish")
        assert wa.faults()["gc_fail_rounds"] == {"remaining": 1, "status": "complete",
                                                 "details": "GC did not finish"}
        put_gc(wa, token).raise_for_status()
        gcs = [cb.body["services"][0]["message"]["gc"] for cb in rx.get_many(2)]
        assert all(gc["status"] == "complete" and gc["errors"] == [error] for gc in gcs)
        assert sum(gc["messages_deleted"] for gc in gcs) == 100
        assert wa.wait_gc_idle(5)
        stats = wa.stats()
        assert (stats["gc_rounds_failed"], stats["gc_rounds_completed"]) == (3, 1)
        assert wa.faults()["gc_fail_rounds"] is None
        assert count_by_status(sqlite_url)["read"] == n_read - 200
        r = requests.post(f"{wa.url}/_standin/gc_fail_rounds", json={"rounds": 1,
                                                                     "status": "partial"},
                          timeout=5)
        assert r.status_code == 400 and "status must be one of" in r.json()["error"]


def test_gc_batch_pause_deletes_slowly(sqlite_url: str, rx: CallbackReceiver) -> None:
    n_read = fill(sqlite_url, 400)
    with StandIn(sqlite_url, callback_url=rx.url, gc_batch_size=50) as wa:
        admin(wa, "gc_batch_pause", seconds=30)
        put_gc(wa, login(wa)).raise_for_status()
        # One batch is gone; the next waits for the pause.
        assert wa.wait_until(lambda s: s["delete_batches"] == 1, timeout=10)
        assert count_by_status(sqlite_url)["read"] == n_read - 50
        assert wa.stats()["gc_running"] == 1 and rx.empty()
        started = time.monotonic()
    assert time.monotonic() - started < 3  # stop() interrupts the pause


@pytest.mark.postgres
def test_gc_no_callback_and_delay_postgres(postgres_url: str, rx: CallbackReceiver) -> None:
    fill(postgres_url, 500)
    with StandIn(postgres_url, callback_url=rx.url) as wa:
        token = login(wa)
        wa.gc_no_callback()
        put_gc(wa, token).raise_for_status()
        assert wa.wait_gc_idle(10)
        assert count_by_status(postgres_url)["read"] == 0
        with pytest.raises(queue.Empty):
            rx.get(timeout=0.3)
        assert wa.stats()["callbacks_sent"] == 0

        # A long gc_delay: answered at once, nothing deleted yet; stop() interrupts the wait.
        wa.clear_faults()
        fill(postgres_url, 200)
        admin(wa, "gc_delay", seconds=60)
        put_gc(wa, token).raise_for_status()
        assert wa.stats()["gc_running"] == 1
        assert count_by_status(postgres_url)["read"] > 0
        started = time.monotonic()
    assert time.monotonic() - started < 3
    assert rx.empty()


def test_gc_reports_database_errors(sqlite_url: str, rx: CallbackReceiver) -> None:
    with StandIn(sqlite_url, callback_url=rx.url) as wa:  # no messages table
        put_gc(wa, login(wa)).raise_for_status()
        gc = rx.get(timeout=10).body["services"][0]["message"]["gc"]
        assert gc["status"] == "failed" and gc["errors"][0]["code"] == 1014
        assert "messages" in gc["errors"][0]["details"]


def test_callback_receiver_errors_are_counted(sqlite_url: str) -> None:
    fill(sqlite_url, 100)
    with CallbackReceiver(status=503) as rx, StandIn(sqlite_url, callback_url=rx.url) as wa:
        put_gc(wa, login(wa)).raise_for_status()
        rx.get(timeout=10)
        assert wa.wait_gc_idle(5)
        assert wa.stats()["callback_errors"] == 1 and wa.callbacks()[0]["status"] == 503


# -- fault modes ----------------------------------------------------------------------------

def test_fail_next_returns_wa_errors(sqlite_url: str) -> None:
    fill(sqlite_url, 10)
    with StandIn(sqlite_url) as wa:
        token = login(wa)
        admin(wa, "fail_next", endpoint="message_gc", count=2, status=500)
        for _ in range(2):
            body = assert_wa_error(put_gc(wa, token), 500, 1014)
            assert body["errors"][0]["title"] == "Internal error"
        assert put_gc(wa, token).status_code == 200

        wa.fail_next("/v1/users/login", status=503, code=1011, title="Service not ready")
        assert_wa_error(requests.post(f"{wa.url}/v1/users/login", auth=("admin", "secret"),
                                      timeout=5), 503, 1011)
        login(wa)
        assert wa.stats()["faults_injected"] == 3
        assert wa.wait_gc_idle(5)


def test_slow_mode() -> None:
    with StandIn() as wa:
        token = login(wa)
        admin(wa, "slow", endpoint="health", seconds=0.4)
        started = time.monotonic()
        assert requests.get(f"{wa.url}/v1/health", headers=bearer(token), timeout=5).ok
        assert time.monotonic() - started >= 0.4
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f"{wa.url}/v1/health", headers=bearer(token), timeout=0.1)
        admin(wa, "slow", endpoint="health", seconds=0)
        started = time.monotonic()
        assert requests.get(f"{wa.url}/v1/health", headers=bearer(token), timeout=5).ok
        assert time.monotonic() - started < 0.3


def test_hang_mode_and_fast_stop() -> None:
    wa = StandIn().start()
    try:
        token = login(wa)
        admin(wa, "hang", endpoint="message_gc")
        with pytest.raises(requests.exceptions.ReadTimeout):
            put_gc(wa, token, timeout=0.5)
        assert wa.stats()["hanging"] == 1
        # other endpoints still answer
        assert requests.get(f"{wa.url}/v1/health", headers=bearer(token), timeout=5).ok

        admin(wa, "hang", endpoint="message_gc", on=False)
        assert wa.wait_until(lambda s: s["hanging"] == 0, 5)
        assert put_gc(wa, token).status_code == 200

        wa.hang("*")
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f"{wa.url}/v1/health", headers=bearer(token), timeout=0.3)
        assert wa.stats()["hanging"] == 1
    finally:
        started = time.monotonic()
        wa.stop()
    assert time.monotonic() - started < 2


def test_hung_request_is_dropped_on_stop() -> None:
    """A client waiting without timeout on a hung call gets its connection closed by stop()."""
    wa = StandIn().start()
    token = login(wa)
    wa.hang("health")
    outcome: queue.Queue[BaseException | int] = queue.Queue()

    def call() -> None:
        try:
            outcome.put(requests.get(f"{wa.url}/v1/health", headers=bearer(token),
                                     timeout=30).status_code)
        except requests.exceptions.RequestException as exc:
            outcome.put(exc)

    threading.Thread(target=call, daemon=True).start()
    assert wa.wait_until(lambda s: s["hanging"] == 1, 5)
    started = time.monotonic()
    wa.stop()
    assert isinstance(outcome.get(timeout=5), requests.exceptions.ConnectionError)
    assert time.monotonic() - started < 2


def test_stats_reset() -> None:
    with StandIn() as wa:
        login(wa)
        assert requests.get(f"{wa.url}/_standin/stats", timeout=5).json()["logins"] == 1
        admin(wa, "reset_stats")
        stats = requests.get(f"{wa.url}/_standin/stats", timeout=5).json()
        assert stats["logins"] == 0 and stats["requests"] == {}
        wa.hang("login")
        wa.slow("health", 2)
        assert requests.get(f"{wa.url}/_standin/faults", timeout=5).json()["hang"] == ["login"]
        admin(wa, "reset")
        assert wa.faults()["hang"] == [] and wa.faults()["slow"] == {}
        login(wa)


# -- media GC -------------------------------------------------------------------------------

def test_media_gc_one_at_a_time(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    old_time = time.time() - 31 * 86400
    old = [media / "a.jpg", media / "sub" / "b.ogg"]
    new = [media / "c.pdf", media / "sub" / "d.mp4"]
    for f in old + new:
        f.write_bytes(b"x")
    for f in old:
        os.utime(f, (old_time, old_time))

    with StandIn(media_dir=media, media_gc_delay=0.3) as wa:
        token = login(wa)
        r = put_gc(wa, token, kind="media")
        assert r.status_code == 200
        assert r.json() == {"services": {"media": {"gc": {"status": "processing"}}},
                            "meta": META}
        assert_wa_error(put_gc(wa, token, kind="media"), 409, 1015)
        assert wa.wait_gc_idle(5)
        assert [f.exists() for f in old + new] == [False, False, True, True]
        assert put_gc(wa, token, kind="media").status_code == 200
        assert wa.wait_gc_idle(5)
        stats = wa.stats()
        assert stats["media_gc_calls"] == 2 and stats["media_gc_rejected"] == 1
        assert stats["media_files_deleted"] == 2


def test_media_gc_calls_back_as_meta_documents(tmp_path: Path, rx: CallbackReceiver) -> None:
    """Completion under "message" with items_deleted; failure under "media"."""
    media = tmp_path / "media"
    media.mkdir()
    old_time = time.time() - 31 * 86400
    for name in ("a.jpg", "b.ogg"):
        (media / name).write_bytes(b"x")
        os.utime(media / name, (old_time, old_time))
    with StandIn(media_dir=media, callback_url=rx.url) as wa:
        token = login(wa)
        put_gc(wa, token, kind="media").raise_for_status()
        assert rx.get(timeout=5).body == {"services": [{"message": {"gc": {
            "items_deleted": 2, "status": "complete"}}}]}
        assert wa.wait_gc_idle(5)
        admin(wa, "media_gc_fail", details="Could not delete media files")
        put_gc(wa, token, kind="media").raise_for_status()
        assert rx.get(timeout=5).body == {"services": [{"media": {"gc": {
            "items_deleted": 0,
            "errors": [{"code": 1014, "details": "Could not delete media files"}],
            "status": "failed"}}}]}
        assert wa.wait_gc_idle(5)
        admin(wa, "clear_faults")
        admin(wa, "media_gc_no_callback")
        put_gc(wa, token, kind="media").raise_for_status()
        assert wa.wait_gc_idle(5) and len(wa.callbacks()) == 2


def test_gc_fail_nodes_and_report_deleted(sqlite_url: str, rx: CallbackReceiver) -> None:
    n_read = fill(sqlite_url, 300)
    with StandIn(sqlite_url, callback_url=rx.url, multiconnect=["wacore1", "wacore2"]) as wa:
        admin(wa, "gc_fail_nodes", nodes=["wacore2"], details="no")
        admin(wa, "gc_report_deleted", count=10**23)
        put_gc(wa, login(wa)).raise_for_status()
        gcs = {cb.body["services"][0]["message"]["gc"]["node"]:
               cb.body["services"][0]["message"]["gc"] for cb in rx.get_many(2)}
        assert gcs[wa.node_ids[0]] == {"messages_deleted": 10**23, "status": "complete",
                                       "node": wa.node_ids[0]}
        assert gcs[wa.node_ids[1]] == {"status": "failed", "node": wa.node_ids[1],
                                       "errors": [{"code": 1014, "details": "no"}]}
        assert wa.wait_gc_idle(5) and wa.stats()["rows_deleted"] == n_read


# -- CLI with TLS ---------------------------------------------------------------------------

def test_cli_tls_multiconnect(tmp_path: Path, sqlite_url: str, rx: CallbackReceiver) -> None:
    n_read = fill(sqlite_url, 400)
    cert, key = make_self_signed_cert(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.wa_standin", "--listen", "127.0.0.1:0",
         "--db-url", sqlite_url, "--tls-cert", str(cert), "--tls-key", str(key),
         "--users", "ops:p4ss:word", "--token-ttl", "60", "--multiconnect", "wacore1,wacore2",
         "--callback-url", rx.url, "--callback-header", "Authorization: Bearer hook"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=20), "no LISTENING line"
        line = proc.stdout.readline()
        assert re.fullmatch(r"LISTENING https://127\.0\.0\.1:\d+\n", line), line
        url = line.split()[1]

        r = requests.post(f"{url}/v1/users/login", auth=("ops", "p4ss:word"), verify=cert,
                          timeout=5)
        assert r.status_code == 200
        token = r.json()["users"][0]["token"]
        r = requests.put(f"{url}/v1/services/message/gc", headers=bearer(token), verify=cert,
                         timeout=5)
        assert set(r.json()["services"]["message"]["gc"]) == {node_id("wacore1"),
                                                              node_id("wacore2")}
        cbs = rx.get_many(2)
        assert {cb.headers["Authorization"] for cb in cbs} == {"Bearer hook"}
        assert sum(cb.body["services"][0]["message"]["gc"]["messages_deleted"]
                   for cb in cbs) == n_read
        assert requests.get(f"{url}/_standin/stats", verify=cert, timeout=5).json()["logins"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
