"""Reaching the Docker engine: find the WA containers, list their logs, locate the media volume.

One :class:`DockerEngine` is shared by every collector and action that talks to Docker. It
makes its client with ``docker.from_env()`` (``DOCKER_HOST``: unix socket, TCP with TLS, or
SSH through the ``ssh`` command) on first use and throws it away after any failure to reach
the engine, so an engine that restarts or comes back is picked up on the next call.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from exporter.config import ContainersSettings, Role
from exporter.errors import SourceError
from exporter.sources.files import LogEntry

T = TypeVar("T")

# docker-py keeps a connection pool per request URL on a unix socket, up to 25, each holding
# its idle connection; every exec has URLs of its own, so the exporter kept ~25 idle sockets
# to the engine. Four pools keep the busiest URLs (the container list) reused; a connection
# to a unix socket costs tens of microseconds.
DOCKER_POOLS = 4


def client_from_env(**kwargs: Any) -> docker.DockerClient:
    """``docker.from_env()`` (environment and CLI context), with at most DOCKER_POOLS pools
    on a unix socket. ``num_pools`` cannot say so: docker-py 7 applies it to SSH only."""
    client = docker.from_env(**kwargs)
    try:
        from docker.transport.unixconn import UnixHTTPAdapter
        from urllib3._collections import RecentlyUsedContainer
    except ImportError:  # moved by a later docker-py or urllib3: keep their default
        return client
    adapter = getattr(client.api, "_custom_adapter", None)
    if isinstance(adapter, UnixHTTPAdapter) and isinstance(adapter.pools, RecentlyUsedContainer):
        old, adapter.pools = adapter.pools, RecentlyUsedContainer(
            DOCKER_POOLS, dispose_func=lambda pool: pool.close())
        old.clear()  # closes the pool of the version check from_env may have made
    return client


SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
# Compose service names of the WA client (SPEC section 2): waweb; wacore, wacore1..;
# master1.. in a multiconnect set.
SERVICE_ROLES: tuple[tuple[re.Pattern[str], Role], ...] = (
    (re.compile(r"waweb"), "webapp"),
    (re.compile(r"wacore\d*"), "coreapp"),
    (re.compile(r"master\d*"), "master"),
)


class DockerError(SourceError):
    """The engine could not be reached (``connect``), did not answer in time (``timeout``), or
    refused a request (``api``); for one container: ``not_running`` or ``exec``."""


class DockerEngine:
    """A Docker client made on first use and remade after the engine was out of reach."""

    def __init__(self, *, timeout: float,
                 factory: Callable[..., docker.DockerClient] = client_from_env) -> None:
        self.timeout = timeout
        self.factory = factory
        self.where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self._client: docker.DockerClient | None = None
        self._identity: str | None = None  # the engine ID, asked once per client
        self._lock = threading.Lock()

    def identity(self) -> str:
        """``<engine ID>@<host name>`` as ``docker info`` gives them: what tells one Docker
        host from another, e.g. same-named containers on two hosts. The host name too, as
        hosts cloned from one image can share the engine ID's key file. Asked once per
        client; a client remade after an outage asks again, as the engine behind
        ``DOCKER_HOST`` may have been replaced."""
        client = self._get()
        with self._lock:
            if self._identity is not None and self._client is client:
                return self._identity
        try:
            info = self.call(lambda api: api.info())
            identity = f"{info.get('ID') or ''}@{info.get('Name') or ''}"
        except APIError as exc:
            raise DockerError(f"docker info failed: {_explain(exc)}", kind="api") from None
        with self._lock:
            if self._client is client:
                self._identity = identity
        return identity

    def call(self, request: Callable[[docker.APIClient], T]) -> T:
        """Run ``request`` with the low-level API; engine trouble becomes a :class:`DockerError`.

        ``APIError`` (the engine answered with an error) passes through for the caller.
        """
        client = self._get()
        try:
            return request(client.api)
        except APIError:
            raise
        except (requests.Timeout, TimeoutError) as exc:
            # The connection is discarded, the client is fine: others may be using it now.
            raise self._unreachable(exc) from None
        except (DockerException, requests.RequestException, OSError) as exc:
            self._drop(client)
            raise self._unreachable(exc) from None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _get(self) -> docker.DockerClient:
        with self._lock:
            if self._client is not None:
                return self._client
        # Made outside the lock: the client asks the engine its API version, and an engine
        # that never answers would hold every other caller, close() at exit included.
        try:
            client = self.factory(timeout=max(1, round(self.timeout)), use_ssh_client=True)
        except (DockerException, requests.RequestException, OSError) as exc:
            raise self._unreachable(exc) from None
        with self._lock:
            if self._client is None:
                self._client = client
                return client
            kept = self._client  # another thread made one meanwhile
        client.close()
        return kept

    def _drop(self, client: docker.DockerClient) -> None:
        with self._lock:
            current = self._client is client  # else another thread already replaced it
            if current:
                self._client, self._identity = None, None
        if current:
            client.close()

    def _unreachable(self, exc: BaseException) -> DockerError:
        # The same text for every failure of one kind: the collectors log once per change.
        chain: list[BaseException] = []
        cause: BaseException | None = exc
        while cause is not None and len(chain) < 10:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        if any(isinstance(e, requests.Timeout | TimeoutError) for e in chain):
            return DockerError(f"Docker engine at {self.where} did not answer in time",
                               kind="timeout")
        if any(isinstance(e, requests.ConnectionError | OSError) for e in chain):
            return DockerError(f"Docker engine at {self.where} is unreachable", kind="connect")
        # Not the network: the client's own settings (TLS files, an unknown URL scheme).
        text = " ".join(str(exc).split())[:200]
        return DockerError(f"Docker client for {self.where} failed: {text}", kind="connect")


# --- finding the WA containers ----------------------------------------------------------------


MediaMode = Literal["rw", "ro", "none"]
MEDIA_MODES: tuple[MediaMode, ...] = ("rw", "ro", "none")


@dataclass(frozen=True)
class MediaMount:
    """What a container has mounted at the media path: ``mode`` ``none`` if nothing; else the
    mount's ``type`` (``volume``, ``bind``…) and ``source`` (a volume's name, a bind's host
    path)."""

    mode: MediaMode = "none"
    type: str = ""
    source: str = ""


def media_mount(mounts: Sequence[Mapping[str, Any]], path: str) -> MediaMount:
    """The mount at ``path`` among a container's ``Mounts`` (as ``docker inspect`` and the
    container list give them)."""
    wanted = path.rstrip("/") or "/"
    for mount in mounts:
        if (str(mount.get("Destination") or "").rstrip("/") or "/") != wanted:
            continue
        kind = str(mount.get("Type") or "")
        source = str(mount.get("Name") or "") if kind == "volume" else ""
        return MediaMount("rw" if mount.get("RW") else "ro", kind,
                          source or str(mount.get("Source") or ""))
    return MediaMount()


@dataclass(frozen=True)
class WaContainer:
    id: str
    name: str
    role: Role
    running: bool
    media: MediaMount = MediaMount()
    image: str = ""  # as the container was created from, e.g. docker.whatsapp.biz/web:v2.53.2
    version: str = ""  # see image_version


VERSION_LABEL = "org.opencontainers.image.version"


def image_version(image: str, labels: Mapping[str, str]) -> str:
    """The WA client version of a container: its image tag (Meta tags releases,
    ``docker.whatsapp.biz/web:v2.53.2``), else the image's OCI version label (kept when an
    image is re-tagged, e.g. ``latest`` in a private registry); ``""`` if neither says."""
    name, _, tag = image.partition("@")[0].rpartition(":")  # a digest names no version
    if name and "/" not in tag and tag not in ("latest", "") and name != "sha256":
        return tag
    return labels.get(VERSION_LABEL, "")


def recognise(name: str, labels: Mapping[str, str], image: str,
              settings: ContainersSettings) -> Role | None:
    """The WA role of a container: by explicit name, else compose service, else image glob."""
    if name in settings.names:
        return settings.names[name]
    if settings.compose_project is not None and \
            labels.get(PROJECT_LABEL) != settings.compose_project:
        return None
    service = labels.get(SERVICE_LABEL)
    if service is not None:
        for pattern, role in SERVICE_ROLES:
            if pattern.fullmatch(service):
                return role
    for rule in settings.images:
        if fnmatch.fnmatchcase(image, rule.pattern):
            return rule.role
    return None


class ContainerDirectory:
    """The one place that discovers WA containers; every collector and action asks it."""

    def __init__(self, engine: DockerEngine, settings: ContainersSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._known: dict[str, WaContainer] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[list[WaContainer]], None]] = []

    def subscribe(self, listener: Callable[[list[WaContainer]], None]) -> None:
        """Call ``listener`` with every successful discovery's containers."""
        self._listeners.append(listener)

    def discover(self) -> list[WaContainer]:
        """The WA containers on the engine now, running or not (one API call)."""
        try:
            listed = self.engine.call(lambda api: api.containers(all=True))
        except APIError as exc:
            raise DockerError(f"listing containers failed: {_explain(exc)}", kind="api") from None
        found: list[WaContainer] = []
        for item in listed:
            name = _name(item)
            labels, image = item.get("Labels") or {}, item.get("Image") or ""
            role = recognise(name, labels, image, self.settings)
            if role is not None:
                media = media_mount(item.get("Mounts") or [], self.settings.media_path)
                found.append(WaContainer(item["Id"], name, role, item.get("State") == "running",
                                         media, image, image_version(image, labels)))
        found.sort(key=lambda c: c.name)
        with self._lock:
            self._known = {c.name: c for c in found}
        for listener in self._listeners:
            listener(found)
        return found

    def known(self) -> dict[str, WaContainer]:
        """The containers of the last successful discovery, by name."""
        with self._lock:
            return dict(self._known)


def _name(item: Mapping[str, Any]) -> str:
    names = item.get("Names") or [item["Id"][:12]]
    return str(names[0]).lstrip("/")


def _explain(exc: APIError) -> str:
    return " ".join(str(exc.explanation or exc).split())[:200]


# --- log listings through docker exec --------------------------------------------------------

# One fixed script for busybox and coreutils images alike. The log directory is its only
# argument, never part of the script. ``stat`` prints ``size mtime path`` per file, and every
# path starts with ``./`` or ``archive/``: a file name cannot hold a ``/``, so no name can fake
# the start of the next record, even with newlines in it.
LISTING_SCRIPT = (
    'cd "$1" || exit 97\n'
    "exec find . archive/ -maxdepth 1 -type f -exec stat -c '%s %Y %n' {} +\n"
)
_NO_LOG_DIR = 97
_SETTLE_SECONDS = 3
_RECORD = re.compile(rb"(\d+) (\d+) (\./|archive/+)([^/]*)\n")


def parse_listing(output: bytes) -> list[LogEntry]:
    """Parse :data:`LISTING_SCRIPT` output; raise ``ValueError`` on anything else."""
    entries: list[LogEntry] = []
    position = 0
    while position < len(output):
        match = _RECORD.match(output, position)
        if match is None:
            raise ValueError(f"unexpected listing output at byte {position}: "
                             f"{output[position:position + 60]!r}")
        size, mtime, prefix, name = match.groups()
        where: Literal["live", "archive"] = "live" if prefix == b"./" else "archive"
        entries.append(LogEntry(where, name, int(size), float(mtime)))
        position = match.end()
    return entries


def list_logs(engine: DockerEngine, container: WaContainer, log_dir: str) -> list[LogEntry]:
    """List ``log_dir`` and its archive inside ``container`` with one ``docker exec``."""
    command = ["sh", "-c", LISTING_SCRIPT, "wa-exporter", log_dir]

    def run(api: docker.APIClient) -> tuple[int | None, bytes, bytes]:
        exec_id = api.exec_create(container.id, command, stdout=True, stderr=True,
                                  environment={"LC_ALL": "C"})["Id"]
        out, err = api.exec_start(exec_id, demux=True)
        return api.exec_inspect(exec_id).get("ExitCode"), out or b"", err or b""

    try:
        code, out, err = engine.call(run)
    except NotFound:
        raise DockerError(f"{container.name} is gone", kind="not_running") from None
    except APIError as exc:
        if refused_as_not_running(exc):
            raise DockerError(f"{container.name} is not running", kind="not_running") from None
        raise DockerError(f"exec in {container.name} failed: {_explain(exc)}",
                          kind="exec") from None
    if ended_by_stop(engine, container, code):
        raise DockerError(f"{container.name} stopped during the listing", kind="not_running")
    if code is None or code > 128:
        raise DockerError(f"listing {log_dir} in {container.name} was killed (exit {code})",
                          kind="exec")
    if code == _NO_LOG_DIR:
        raise DockerError(f"{container.name} has no {log_dir}", kind="exec")
    if code != 0 and not (code == 1 and _only_missing_paths(err)):
        text = " ".join(err.decode(errors="replace").split())[:200]
        raise DockerError(f"listing {log_dir} in {container.name} exited with {code}: {text}",
                          kind="exec")
    try:
        return parse_listing(out)
    except ValueError as exc:
        raise DockerError(f"{container.name}: {exc}", kind="exec") from None


def _only_missing_paths(stderr: bytes) -> bool:
    """Exit 1 with only these complaints: no archive yet, or a file rotated away mid-listing."""
    return all(b"No such file or directory" in line for line in stderr.splitlines())


def refused_as_not_running(exc: APIError) -> bool:
    """Whether the engine refused an exec because the container is not (or no longer)
    running: a 409, or — for a container exiting at that moment — another status whose
    message says so ("Container … is not running: Exited (0) Less than a second ago")."""
    return exc.status_code == HTTPStatus.CONFLICT or "is not running" in _explain(exc)


def ended_by_stop(engine: DockerEngine, container: WaContainer, code: int | None) -> bool:
    """Whether an exec that ended with ``code`` was cut short by its container stopping.

    A stop kills the exec (no code, or 128 + signal), or the OCI runtime fails to exec into
    the dying container (126: "cannot exec in a stopped state"). 126 is also what a command
    that cannot be executed returns, so either way the container itself decides: it must
    stop within a moment."""
    if code is not None and code != 126 and code <= 128:
        return False
    return _stops(engine, container)


def _stops(engine: DockerEngine, container: WaContainer) -> bool:
    """Whether the container stops within a moment. The engine may report an exec killed by
    ``docker stop``/``kill`` a little before the container's own exit."""

    def wait(api: docker.APIClient) -> bool:
        try:
            api.wait(container.id, timeout=_SETTLE_SECONDS, condition="not-running")
        except NotFound:
            return True
        except requests.Timeout:
            return False
        return True

    return engine.call(wait)


# --- the media volume ---------------------------------------------------------------------


def find_volume(engine: DockerEngine, name: str, project: str | None) -> tuple[str, str]:
    """``(volume name, mountpoint)`` of ``name`` or a compose-prefixed ``<project>_<name>``."""
    try:
        listed = engine.call(lambda api: api.volumes())
    except APIError as exc:
        raise DockerError(f"listing volumes failed: {_explain(exc)}", kind="api") from None
    volumes: Sequence[Mapping[str, Any]] = listed.get("Volumes") or []
    matches = {v["Name"]: v.get("Mountpoint") or "" for v in volumes
               if v["Name"] == name or v["Name"].endswith("_" + name)}
    preferred = [n for n in (f"{project}_{name}", name) if n in matches and (project or n == name)]
    if preferred:
        chosen = preferred[0]
    elif len(matches) == 1:
        chosen = next(iter(matches))
    elif not matches:
        raise DockerError(f"no Docker volume named {name} or <project>_{name}", kind="missing")
    else:
        raise DockerError(f"several Docker volumes match {name}: {', '.join(sorted(matches))}; "
                          "fix: set collectors.volume.name to the full name", kind="ambiguous")
    return chosen, matches[chosen]
