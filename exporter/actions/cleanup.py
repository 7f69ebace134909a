"""``cleanup``: the WA cleanup script, through ``docker exec``, on every WA container at once
(with a bound), or on the one container an alert names."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

import docker
from docker.errors import APIError, NotFound

from exporter.actions.base import (
    ERROR,
    FAILED,
    SUCCESS,
    TIMEOUT,
    Action,
    ActionResult,
    RunContext,
    UnknownTarget,
)
from exporter.config import CleanupSettings
from exporter.errors import SourceError
from exporter.sources.docker import (
    ContainerDirectory,
    DockerEngine,
    DockerError,
    WaContainer,
    ended_by_stop,
    refused_as_not_running,
)
from exporter.workers import DaemonExecutor

log = logging.getLogger(__name__)

# `timeout` exists in busybox and coreutils; it ends a stuck script inside the container.
# Exit codes: coreutils 124, busybox 143 (killed by TERM).
_TIMED_OUT = (124, 143)
# How long a decision waits for the Docker engine to list the containers: the webhook
# answers within 2 s however the engine hangs.
LOOKUP_SECONDS = 1.5


class CleanupAction(Action):
    name = "cleanup"

    def __init__(self, directory: ContainerDirectory, settings: CleanupSettings) -> None:
        self.directory = directory
        self.settings = settings
        # Its own client to the same engine: a script may run for minutes, longer than the
        # collectors' timeout.
        self.engine = DockerEngine(timeout=settings.timeout + 30,
                                   factory=directory.engine.factory)
        # The lookup behind a decision (see _containers): one at a time, on a thread of its
        # own, so an engine that never answers holds that thread and nothing else.
        self._lookups = DaemonExecutor(1, "cleanup-lookup")
        self._lookup: Future[tuple[dict[str, WaContainer], str]] | None = None
        self._lookup_started = 0.0
        self._lookup_lock = threading.Lock()
        self._identity = ""  # of the engine, from the last lookup: for lock_key

    def _containers(self) -> dict[str, WaContainer]:
        """The WA containers now (a stale list would aim at containers that are gone, or at
        an engine that is down), waited for at most LOOKUP_SECONDS: a decision runs in the
        webhook's answer, in the worker threads that other actions' notifications share. A
        lookup still running is waited for again, not repeated."""
        with self._lookup_lock:
            if self._lookup is None or self._lookup.done():
                self._lookup = self._lookups.submit(self._look_up)
                self._lookup_started = time.monotonic()
            lookup, started = self._lookup, self._lookup_started
        try:
            known, self._identity = lookup.result(
                max(0.0, started + LOOKUP_SECONDS - time.monotonic()))
        except TimeoutError:
            raise UnknownTarget(
                f"cannot list the WA containers: the Docker engine at "
                f"{self.directory.engine.where} has not answered for "
                f"{time.monotonic() - started:.1f}s") from None
        except SourceError as exc:
            raise UnknownTarget(str(exc)) from None
        return known

    def _look_up(self) -> tuple[dict[str, WaContainer], str]:
        try:
            known = {c.name: c for c in self.directory.discover()}
        except SourceError as exc:
            raise DockerError(f"cannot list the WA containers: {exc}", kind=exc.kind) from None
        try:
            identity = self.directory.engine.identity()  # asked once per Docker client
        except SourceError as exc:
            raise DockerError(f"cannot identify the Docker engine: {exc}",
                              kind=exc.kind) from None
        return known, identity

    def targets(self, requested: str | None) -> list[str]:
        known = self._containers()
        if requested:
            if requested not in known:
                raise UnknownTarget(f"{requested!r} is not a known WA container")
            return [requested]
        running = sorted(name for name, c in known.items() if c.running)
        if not running:
            raise UnknownTarget("no running WA container found")
        return running

    def lock_key(self, target: str) -> str:
        """``cleanup:<engine ID>@<host>/<container>``: names are only unique on one engine,
        and with one exporter per host, same-named containers on two hosts (compose names
        them alike) must not share a lock. Exporters watching the same engine do share it."""
        return f"{self.name}:{self._identity}/{target}"

    def run(self, ctx: RunContext) -> ActionResult:
        known = self.directory.known()
        targets = [known[name] for name in ctx.targets if name in known]
        if ctx.dry_run:
            plan = {c.name: {"role": c.role, "result": "dry_run",
                             "command": self._command()} for c in targets}
            return ActionResult("dry_run", {"containers": plan},
                                {c.name: "dry_run" for c in targets})
        with DaemonExecutor(self.settings.parallel, "cleanup") as pool:
            outcomes = dict(zip((c.name for c in targets),
                                pool.map(self._run_one, targets), strict=True))
        per_target = {name: info["result"] for name, info in outcomes.items()}
        results = set(per_target.values())
        overall = SUCCESS if results == {SUCCESS} else ERROR if results == {ERROR} else FAILED
        return ActionResult(overall, {"containers": outcomes}, per_target)

    def _command(self) -> list[str]:
        return ["timeout", "-s", "TERM", str(round(self.settings.timeout)), self.settings.script]

    def _run_one(self, container: WaContainer) -> dict[str, Any]:
        command = self._command()

        def run(api: docker.APIClient) -> tuple[int | None, bytes]:
            exec_id = api.exec_create(container.id, command, stdout=True, stderr=True)["Id"]
            output = api.exec_start(exec_id)
            return api.exec_inspect(exec_id).get("ExitCode"), output or b""

        info: dict[str, Any] = {"role": container.role}
        try:
            code, output = self.engine.call(run)
        except NotFound:
            return {**info, "result": ERROR, "error": "container is gone"}
        except APIError as exc:
            if refused_as_not_running(exc):
                return {**info, "result": ERROR, "error": "container is not running"}
            return {**info, "result": ERROR, "error": str(exc.explanation or exc)[:300]}
        except SourceError as exc:
            kind = TIMEOUT if exc.kind == "timeout" else ERROR
            return {**info, "result": kind, "error": str(exc)}
        if code not in (0, *_TIMED_OUT) and ended_by_stop(self.engine, container, code):
            log.warning("a container stopped during cleanup", extra={
                "container": container.name, "exit_code": code})
            return {**info, "result": ERROR, "exit_code": code,
                    "error": "container stopped during cleanup"}
        tail = output[-self.settings.output_tail_bytes:].decode(errors="replace") \
            if self.settings.output_tail_bytes else ""
        result = SUCCESS if code == 0 else TIMEOUT if code in _TIMED_OUT else FAILED
        if result != SUCCESS:
            log.warning("cleanup failed in a container", extra={
                "container": container.name, "exit_code": code, "result": result})
        return {**info, "result": result, "exit_code": code, "output_tail": tail}
