"""cleanup.sh through docker exec on real stand-in WA containers; the DB lock across replicas."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Action, ActionResult, Request, RunContext
from exporter.actions.runner import Runner
from exporter.collectors.actions import ActionMetrics
from exporter.config import ActionsSettings, DatabaseSettings, MessagesSettings
from exporter.sources.database import open_source
from exporter.sources.locks import cluster_lock
from tests.docker_support import (
    ARCHIVE_DIR,
    fill_archive,
    list_dir,
    remove_test_containers,
    start_wa_container,
)
from tests.support import (
    ROOT,
    DatabaseServer,
    new_prefix,
    run_exporter,
    series,
    wait_for,
)


@pytest.fixture
def install(client: docker.DockerClient) -> Iterator[dict[str, docker.models.containers.Container]]:
    project = f"wacleanup{os.getpid()}"
    containers = {
        "waweb": start_wa_container(client, role="webapp", service="waweb", project=project),
        "wacore": start_wa_container(client, role="coreapp", service="wacore", project=project),
        "master1": start_wa_container(client, role="master", service="master1", project=project,
                                      env={"WA_CLEANUP_FAIL": "1"}),
    }
    yield containers
    remove_test_containers(client, project)


def _run_cli(tmp_path: Path, *args: str, project: str) -> tuple[int, dict]:
    config = tmp_path / "cfg.yml"
    config.write_text(f"""
collectors:
  messages: {{enabled: false}}
  containers: {{compose_project: {project}}}
actions:
  allowed: [cleanup]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / 'state'}
  cleanup: {{parallel: 3, timeout: 60s}}
""")
    result = subprocess.run([sys.executable, "-m", "exporter", "run", "cleanup", *args,
                             "--config.file", str(config)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PATH": os.environ["PATH"]})
    return result.returncode, json.loads(result.stdout)


@pytest.mark.docker
def test_cli_cleanup_runs_on_every_wa_container_and_records_each(install: dict,
                                                                 tmp_path: Path) -> None:
    fill_archive(install["wacore"], 40, prefix="coreapp.log")
    project = install["waweb"].labels["com.docker.compose.project"]
    code, report = _run_cli(tmp_path, project=project)
    containers = report["result"]["containers"]
    assert code == 1  # the master's script fails on purpose
    assert report["decision"]["outcome"] == "started"
    by_service = {name.split("-")[1]: info for name, info in containers.items()}
    assert by_service["wacore"]["result"] == "success"
    assert by_service["wacore"]["role"] == "coreapp"
    assert "archive now 30 files" in by_service["wacore"]["output_tail"]
    assert by_service["master1"]["result"] == "failed" and by_service["master1"]["exit_code"] == 1
    assert by_service["waweb"]["result"] == "success"
    assert len(list_dir(install["wacore"], ARCHIVE_DIR)) == 30

    # A second run inside the cooldown is refused for every container: exit code 3.
    code, report = _run_cli(tmp_path, project=project)
    assert code == 3 and report["decision"]["outcome"] == "skipped_cooldown"


@pytest.mark.docker
def test_cli_cleanup_of_one_named_container_and_unknown_names(install: dict,
                                                              tmp_path: Path) -> None:
    project = install["waweb"].labels["com.docker.compose.project"]
    name = install["wacore"].name
    code, report = _run_cli(tmp_path, "--container", name, project=project)
    assert code == 0 and list(report["result"]["containers"]) == [name]
    code, report = _run_cli(tmp_path, "--container", "not-a-wa-container", project=project)
    assert code == 2 and report["decision"]["outcome"] == "rejected"
    code, report = _run_cli(tmp_path, "--dry-run", project=project)
    assert code == 0 and report["decision"]["outcome"] == "dry_run"


@pytest.mark.docker
def test_a_container_stopping_during_cleanup_is_an_error_not_a_failed_script(
        install: dict, tmp_path: Path) -> None:
    # This cleanup.sh stops its container and exits 126, as the OCI runtime answers an exec
    # into a container that is going away: the script did not fail, the container went.
    doomed = install["wacore"]
    assert doomed.exec_run(["sh", "-c", 'printf "#!/bin/sh\\nkill -TERM 1\\nexit 126\\n" '
                                        "> /opt/whatsapp/bin/cleanup.sh"]).exit_code == 0
    project = install["waweb"].labels["com.docker.compose.project"]
    code, report = _run_cli(tmp_path, "--container", doomed.name, project=project)
    outcome = report["result"]["containers"][doomed.name]
    assert outcome["result"] == "error", outcome
    assert outcome["error"] == "container stopped during cleanup"
    assert code == 1
    doomed.reload()
    assert doomed.status == "exited"


@pytest.mark.docker
def test_cleanup_counters_exist_for_every_container_before_the_first_run(
        install: dict, tmp_path: Path) -> None:
    project = install["waweb"].labels["com.docker.compose.project"]
    config = f"""
collectors:
  messages: {{enabled: false}}
  containers: {{compose_project: {project}, interval: 1s}}
actions:
  allowed: [cleanup]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / 'state'}
  schedules: []
"""
    with run_exporter(config=config, tmp_path=tmp_path, args=["--webhook.no-auth"]) as exporter:
        master = install["master1"].name
        samples = exporter.wait_metric("whatsapp_cleanup_runs_total", 0.0, container=master,
                                       role="master", trigger="schedule", result="failed")
        runs = series(samples, "whatsapp_cleanup_runs_total")
        for container in install.values():
            role = container.labels["com.docker.compose.service"].rstrip("1")
            role = {"waweb": "webapp", "wacore": "coreapp", "master": "master"}[role]
            for trigger in ("alert", "schedule", "manual"):
                for result in ("success", "failed", "error", "timeout"):
                    labels = (("container", container.name), ("result", result),
                              ("role", role), ("trigger", trigger))
                    assert runs.get(labels) == 0.0, (labels, sorted(runs))
        # No timestamps yet: 0 would read as "never cleaned" to the overdue alert.
        assert not series(samples, "whatsapp_cleanup_last_run_timestamp_seconds")


class Slow(Action):
    name = "gc"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.result = "success"

    def run(self, ctx: RunContext) -> ActionResult:
        self.entered.set()
        assert self.release.wait(20)
        return ActionResult(self.result)


@contextlib.contextmanager
def two_replicas(db_server: DatabaseServer, tmp_path: Path, cooldown: float = 3600.0,
                 idle_timeout_ms: int | None = None) -> Iterator[list[tuple[Runner, Slow]]]:
    """Two runners, each with its own state directory and DB session, like two exporters.

    With ``idle_timeout_ms`` (PostgreSQL only), the server itself ends sessions idle for
    longer: ``idle_session_timeout`` on the WA database, which the replicas' lock sessions
    go to. Nothing tells the replicas (``WA_DB_CONNECTION_IDLE_TIMEOUT`` is MySQL-only);
    they must read it from their own session."""
    prefix = new_prefix()
    engine = db_server.create_database(prefix + "main", messages=1)
    env = db_server.env(prefix)
    messages = MessagesSettings()
    if idle_timeout_ms is not None:
        assert db_server.engine_name == "PGSQL"
        with db_server.admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{prefix}main" '
                                 f"SET idle_session_timeout = {idle_timeout_ms}"))
        messages = MessagesSettings(maintenance_database=prefix + "main")
    engine.dispose()
    db = DatabaseSettings.model_validate(env)
    replicas, sources = [], []
    for index in range(2):
        state_dir = tmp_path / f"replica{index}"
        source = open_source(db, messages)
        sources.append(source)
        settings = ActionsSettings(allowed=["gc"], state_dir=state_dir, window="always",
                                   cooldown={"gc": cooldown})
        action = Slow()
        runner = Runner({"gc": action}, settings, AuditLog(state_dir / "audit.jsonl"),
                        StateFile(state_dir / "state.json"),
                        cluster_lock(source, state_dir, settings.lock_timeout),
                        ActionMetrics(CollectorRegistry(), ["gc"]))
        replicas.append((runner, action))
    try:
        yield replicas
    finally:
        for _, action in replicas:
            action.release.set()
        for source in sources:
            source.close()


def test_two_replicas_on_one_database_run_once(db_server: DatabaseServer, tmp_path: Path) -> None:
    with two_replicas(db_server, tmp_path) as [(first, first_action), (second, _)]:
        assert first.submit(Request("gc", "alert")).outcome == "started"
        assert first_action.entered.wait(5)
        decision = second.submit(Request("gc", "alert"))
        assert decision.outcome == "skipped_running"
        assert "running on another replica" in decision.reason
        first_action.release.set()
        assert first.wait_idle(10)
        # Finished, but within its cooldown: the other replica does not run it either.
        decision = second.submit(Request("gc", "alert"))
        assert decision.outcome == "skipped_cooldown"
        assert decision.reason == "gc ran on another replica within its cooldown"
        # This replica's own cooldown comes from its state file, as without replicas.
        assert first.submit(Request("gc", "alert")).outcome == "skipped_cooldown"


def test_the_other_replica_runs_once_the_cooldown_is_over(db_server: DatabaseServer,
                                                          tmp_path: Path) -> None:
    with two_replicas(db_server, tmp_path, cooldown=2.0) as [(first, first_action),
                                                                (second, second_action)]:
        first_action.release.set()
        second_action.release.set()
        assert first.submit(Request("gc", "alert")).outcome == "started"
        assert first.wait_idle(10)
        assert second.submit(Request("gc", "alert")).outcome == "skipped_cooldown"
        # The first replica's keeper frees the cooldown lock when the 2 s are over.
        decision = wait_for(lambda: (d := second.submit(Request("gc", "alert"))).outcome
                            == "started" and d, interval=0.2, what="the second replica to run gc")
        assert decision.outcome == "started"
        assert second.wait_idle(10)


@contextlib.contextmanager
def idle_bystander(server: DatabaseServer) -> Iterator[None]:
    """An idle session on the test's WA database that nobody pings: the server must have
    ended it by the end of the block, or the block did not outlast the idle timeout."""
    conn = server.engine(server.created[-1]).connect().execution_options(
        isolation_level="AUTOCOMMIT")
    conn.execute(sa.text("SELECT 1"))
    try:
        yield
        with pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("SELECT 1"))
    finally:
        conn.close()


def attempts_for(runner: Runner, seconds: float) -> list[str]:
    """The outcome of a gc request every 0.25 s for ``seconds``."""
    outcomes = []
    pace = threading.Event()  # paces the attempts; nothing is waited for but time
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        outcomes.append(runner.submit(Request("gc", "alert")).outcome)
        pace.wait(0.25)
    return outcomes


def test_a_long_run_keeps_its_lock_on_a_server_that_ends_idle_sessions(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    """A GC in rounds can run for an hour while the session holding its run lock says
    nothing. PostgreSQL here ends sessions idle for 2 s: the session must be pinged during
    the run too, or the other replica would start the same GC while the first still runs."""
    idle_s = 2.0
    with two_replicas(postgres, tmp_path, idle_timeout_ms=int(idle_s * 1000)
                      ) as [(first, first_action), (second, _)]:
        with idle_bystander(postgres):
            assert first.submit(Request("gc", "alert")).outcome == "started"
            assert first_action.entered.wait(5)
            outcomes = attempts_for(second, 2.5 * idle_s)
        assert set(outcomes) == {"skipped_running"}, outcomes
        first_action.release.set()
        assert first.wait_idle(10)


def advisory_lock_holders(server: DatabaseServer, database: str) -> set[int]:
    with server.admin.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = :d)"), {"d": database}).scalars())


def kill_lock_session(server: DatabaseServer, database: str) -> tuple[int, bool]:
    """End the one session holding advisory locks in ``database``, as a network cut or a
    DBA would: its pid, and whether the server ended it."""
    [pid] = advisory_lock_holders(server, database)
    with server.admin.connect() as conn:
        return pid, bool(conn.execute(sa.text("SELECT pg_terminate_backend(:p)"),
                                      {"p": pid}).scalar())


def test_a_run_whose_lock_session_is_killed_takes_its_lock_again(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    """A network cut or a DBA's pg_terminate_backend ends the session under a running GC's
    lock. The keeper notices at its next ping, opens a new session and takes the lock again,
    so the other replica is kept out once more."""
    with two_replicas(postgres, tmp_path, idle_timeout_ms=2000  # a ping every second
                      ) as [(first, first_action), (second, _)]:
        database = postgres.created[-1]
        assert first.submit(Request("gc", "alert")).outcome == "started"
        assert first_action.entered.wait(5)
        killed, terminated = kill_lock_session(postgres, database)
        assert terminated
        holders = wait_for(lambda: (h := advisory_lock_holders(postgres, database)) - {killed}
                           and h, timeout=10, interval=0.1,
                           what="the first replica to take its lock again")
        assert killed not in holders
        decision = second.submit(Request("gc", "alert"))
        assert decision.outcome == "skipped_running", decision
        first_action.release.set()
        assert first.wait_idle(10)


def test_a_lock_taken_by_another_replica_in_the_gap_is_let_go_with_a_warning(
        postgres: DatabaseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """If the other replica took the lock while this one had no session, this one cannot
    take it back: it says so, and holds nothing it does not have."""
    with two_replicas(postgres, tmp_path, idle_timeout_ms=4000  # a ping every 2 s
                      ) as [(first, _), (second, _)]:
        database = postgres.created[-1]
        mine, theirs = first.lock, second.lock
        assert mine is not None and theirs is not None
        held = mine.try_acquire("gc")  # its keeper's first ping comes 2 s later
        assert held is not None
        kill_lock_session(postgres, database)
        wait_for(lambda: not advisory_lock_holders(postgres, database),
                 what="the killed session's lock to be freed")
        taken = theirs.try_acquire("gc")
        assert taken is not None
        # Only this test's lock: keepers of earlier tests' replicas may still be winding down.
        with caplog.at_level(logging.WARNING, logger="exporter.sources.locks"):
            wait_for(lambda: [r for r in caplog.records if r.__dict__.get("lost") == "gc"
                              and "could not be taken again" in r.message], timeout=10,
                     what="the first replica to notice")
        assert mine.try_acquire("gc") is None  # still the other replica's
        taken.release()
        held.release()  # of a lock it no longer has: harmless


def test_the_cooldown_lock_outlives_a_server_that_ends_idle_sessions(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    """The session holding a cooldown lock is otherwise idle. PostgreSQL here ends sessions
    idle for 2 s (``idle_session_timeout``, which the keeper reads from its session); the
    keeper's pings keep the session, and the lock, for the whole
    cooldown: the other replica keeps skipping for twice the idle timeout and more."""
    idle_s = 2.0
    with two_replicas(postgres, tmp_path, cooldown=60.0, idle_timeout_ms=int(idle_s * 1000)
                      ) as [(first, first_action), (second, second_action)]:
        first_action.release.set()
        second_action.release.set()
        with idle_bystander(postgres):
            assert first.submit(Request("gc", "alert")).outcome == "started"
            assert first.wait_idle(10)
            outcomes = attempts_for(second, 2.5 * idle_s)
        assert set(outcomes) == {"skipped_cooldown"}, outcomes


def test_a_run_that_did_nothing_leaves_no_cooldown_to_the_other_replica(
        db_server: DatabaseServer, tmp_path: Path) -> None:
    with two_replicas(db_server, tmp_path) as [(first, first_action), (second, second_action)]:
        first_action.result = "error"  # e.g. the WA API was out of reach
        first_action.release.set()
        second_action.release.set()
        assert first.submit(Request("gc", "alert")).outcome == "started"
        assert first.wait_idle(10)
        assert second.submit(Request("gc", "alert")).outcome == "started"
        assert second.wait_idle(10)
