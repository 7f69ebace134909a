"""Helpers for tests that run the wa-standin image (tests/images/wa-standin) on a Docker engine.

No registry is reachable, so the image is built FROM scratch around the host's statically linked
busybox, which is copied into a temporary build context (the binary is never committed).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from tests.support import wait_for

CONTEXT_DIR = Path(__file__).resolve().parent / "images" / "wa-standin"  # committed build context
BUSYBOX = Path("/bin/busybox")  # Debian busybox-static; copied into the build context
DEFAULT_TAG = "wa-standin:test"  # tag of the stand-in image
TEST_LABEL = "wa-exporter.test"  # every test container carries TEST_LABEL=1
CONTEXT_HASH_LABEL = "wa-exporter.context-hash"  # image label: hash of the build context
LOG_DIR = "/var/log/whatsapp"  # live logs inside the container
ARCHIVE_DIR = f"{LOG_DIR}/archive"  # archived, gzipped logs inside the container
CLEANUP_SH = "/opt/whatsapp/bin/cleanup.sh"  # the cleanup script inside the container
ROTATE_BOUND = {"webapp": 20 * 1024 * 1024, "coreapp": 15 * 1024 * 1024, "master": 15 * 1024 * 1024}
LIVE_LOGS = {  # live log files the entrypoint creates, per WA_ROLE
    "webapp": ("web.log", "access.log", "error.log"),
    "coreapp": ("coreapp.log", "wa-service-coreapp.log"),
    "master": ("master.log", "wa-service-master.log"),
}
ARCHIVE_KEEP = 30  # cleanup.sh keeps this many archived files


class DockerUnavailable(RuntimeError):
    """The Docker engine cannot be reached (or the image cannot be built)."""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of a command run in a container with `docker exec`."""

    exit_code: int
    stdout: str
    stderr: str


def ensure_docker() -> docker.DockerClient:
    """Return a client for the local engine; raise DockerUnavailable if it does not answer."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        raise DockerUnavailable(
            f"Docker engine unreachable ({exc}); start dockerd or set DOCKER_HOST"
        ) from exc
    return client


def context_hash(context_dir: Path = CONTEXT_DIR, busybox: Path = BUSYBOX) -> str:
    """Return a sha256 over the build context files (names, modes, bytes) and the busybox binary."""
    digest = hashlib.sha256()
    files = sorted(p for p in context_dir.rglob("*") if p.is_file())
    for path in [*files, busybox]:
        name = path.relative_to(context_dir).as_posix() if path != busybox else "<busybox>"
        digest.update(name.encode() + b"\0" + oct(path.stat().st_mode & 0o777).encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def build_standin_image(client: docker.DockerClient, tag: str = DEFAULT_TAG) -> str:
    """Build (or reuse when its context hash label matches) the stand-in image; return its id."""
    if not BUSYBOX.is_file():
        raise DockerUnavailable(f"{BUSYBOX} missing: install Debian's busybox-static")
    wanted = context_hash()
    try:
        image = client.images.get(tag)
        if (image.labels or {}).get(CONTEXT_HASH_LABEL) == wanted:
            return str(image.id)
    except ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="wa-standin-ctx-") as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(CONTEXT_DIR, ctx)
        shutil.copy2(BUSYBOX, ctx / "busybox")
        try:
            image, _logs = client.images.build(
                path=str(ctx),
                tag=tag,
                labels={CONTEXT_HASH_LABEL: wanted},
                rm=True,
                forcerm=True,
                pull=False,
            )
        except DockerException as exc:
            raise DockerUnavailable(f"building {tag} failed: {exc}") from exc
    return str(image.id)


def compose_name(project: str, service: str, index: int = 1) -> str:
    """Return the container name docker compose v2 would use."""
    return f"{project}-{service}-{index}"


def start_wa_container(
    client: docker.DockerClient,
    *,
    role: str,
    service: str,
    project: str = "watest",
    index: int = 1,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    image: str = DEFAULT_TAG,
    ready_timeout: float = 30.0,
    volumes: Mapping[str, Mapping[str, str]] | None = None,
    network_mode: str | None = None,
) -> Container:
    """Start a stand-in WA container labelled like compose would, and wait for its ready line.

    ``volumes`` as docker-py takes them: ``{volume name or host path: {"bind": path,
    "mode": "rw"|"ro"}}``; ``network_mode="none"`` on an engine without a bridge."""
    if role not in LIVE_LOGS:
        raise ValueError(f"role must be one of {sorted(LIVE_LOGS)}, not {role!r}")
    name = name or compose_name(project, service, index)
    all_labels = {
        "com.docker.compose.project": project,
        "com.docker.compose.service": service,
        "com.docker.compose.container-number": str(index),
        "com.docker.compose.oneoff": "False",
        TEST_LABEL: "1",
        **(labels or {}),
    }
    _remove_leftover(client, name)
    container = client.containers.run(
        image,
        detach=True,
        name=name,
        labels=all_labels,
        environment={"WA_ROLE": role, **(env or {})},
        stop_signal="SIGTERM",
        volumes={source: dict(bind) for source, bind in (volumes or {}).items()},
        network_mode=network_mode,
    )
    wait_for_log_line(container, "wa-standin ready", timeout=ready_timeout)
    container.reload()
    return container


def _remove_leftover(client: docker.DockerClient, name: str) -> None:
    """Remove an earlier test container with that name (never a container without TEST_LABEL)."""
    try:
        old = client.containers.get(name)
    except NotFound:
        return
    if old.labels.get(TEST_LABEL) != "1":
        raise RuntimeError(f"container {name} exists and is not a test container; not touching it")
    old.remove(force=True)


def wait_for_log_line(
    container: Container, needle: str, timeout: float = 30.0, *, exact: bool = False
) -> str:
    """Follow the container's output until a line contains (or, if exact, is) needle."""
    lines: queue.Queue[str | None] = queue.Queue()
    stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)

    def pump() -> None:
        buffer = b""
        try:
            for chunk in stream:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    lines.put(raw.decode(errors="replace"))
        except Exception:  # the stream is closed under us on timeout
            pass
        finally:
            lines.put(None)  # end of stream: the container stopped

    threading.Thread(target=pump, name=f"logs-{container.name}", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if line.rstrip("\r") == needle if exact else needle in line:
                return line
    finally:
        stream.close()
    container.reload()
    raise TimeoutError(
        f"{container.name}: no log line with {needle!r} within {timeout}s "
        f"(status {container.status}); output: "
        f"{container.logs().decode(errors='replace')[-2000:]}"
    )


def exec_sh(
    container: Container,
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    user: str = "",
) -> ExecResult:
    """Run `sh -c script sh args...` in the container and return exit code, stdout and stderr."""
    exit_code, output = container.exec_run(
        ["/bin/sh", "-c", script, "sh", *args],
        environment=dict(env or {}),
        user=user,
        demux=True,
    )
    out, err = output if output is not None else (None, None)
    return ExecResult(
        exit_code=int(exit_code if exit_code is not None else -1),
        stdout=(out or b"").decode(errors="replace"),
        stderr=(err or b"").decode(errors="replace"),
    )


def run_cleanup(
    container: Container, env: Mapping[str, str] | None = None, user: str = ""
) -> ExecResult:
    """Run /opt/whatsapp/bin/cleanup.sh in the container with extra env."""
    return exec_sh(container, 'exec "$1"', CLEANUP_SH, env=env, user=user)


def write_live_log(container: Container, name: str, size_bytes: int) -> None:
    """Create/overwrite the live log LOG_DIR/name with exactly size_bytes bytes of text lines."""
    result = exec_sh(
        container,
        'yes "stand-in filler log line" | head -c "$3" > "$2/$1" && stat -c %s "$2/$1"',
        name,
        LOG_DIR,
        str(size_bytes),
    )
    if result.exit_code != 0 or result.stdout.strip() != str(size_bytes):
        raise RuntimeError(f"write_live_log({name!r}) failed: {result}")


def fill_archive(
    container: Container,
    n_files: int,
    *,
    prefix: str = "web.log",
    newest_mtime: int = 1_700_000_000,
    step_seconds: int = 3600,
) -> list[str]:
    """Create n_files small .gz files in the archive, 1 step apart; return names oldest first."""
    names: list[str] = []
    mtimes: list[int] = []
    for i in range(n_files):
        mtime = newest_mtime - (n_files - 1 - i) * step_seconds
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(mtime))
        names.append(f"{prefix}.{stamp}.gz")
        mtimes.append(mtime)
    script = (
        'cd "$1" && shift || exit 1\n'
        'while [ "$#" -gt 0 ]; do\n'
        '  echo "archived stand-in log $1" | gzip > "$1" && touch -d "@$2" "$1" || exit 1\n'
        "  shift 2\n"
        "done\n"
    )
    args = [x for name, mtime in zip(names, mtimes, strict=True) for x in (name, str(mtime))]
    result = exec_sh(container, script, ARCHIVE_DIR, *args)
    if result.exit_code != 0:
        raise RuntimeError(f"fill_archive failed: {result}")
    return names


def list_dir(container: Container, path: str = ARCHIVE_DIR) -> dict[str, int]:
    """Return {file name: size} for the regular files directly in path inside the container."""
    result = exec_sh(
        container,
        'cd "$1" || exit 1; for f in * .*; do [ -f "$f" ] && printf "%s\\t%s\\n" '
        '"$(stat -c %s "$f")" "$f"; done; exit 0',
        path,
    )
    if result.exit_code != 0:
        raise RuntimeError(f"list_dir({path!r}) failed: {result}")
    entries: dict[str, int] = {}
    for line in result.stdout.splitlines():
        size, _, fname = line.partition("\t")
        entries[fname] = int(size)
    return entries


def reset_logs(container: Container) -> None:
    """Empty the archive, delete extra files under LOG_DIR and truncate the role's live logs."""
    role = container_env(container).get("WA_ROLE", "webapp")
    script = (
        'cd "$1" && shift || exit 1\n'
        "rm -rf archive && mkdir archive || exit 1\n"
        "for f in * .*; do\n"
        '  [ -f "$f" ] || continue\n'
        "  keep=0\n"
        '  for live in "$@"; do [ "$f" = "$live" ] && keep=1; done\n'
        '  if [ "$keep" = 1 ]; then : > "$f" || exit 1; else rm -f "$f" || exit 1; fi\n'
        "done\n"
    )
    result = exec_sh(container, script, LOG_DIR, *LIVE_LOGS[role])
    if result.exit_code != 0:
        raise RuntimeError(f"reset_logs failed: {result}")


def container_env(container: Container) -> dict[str, str]:
    """Return the container's environment (from its config) as a dict."""
    pairs = (item.partition("=") for item in container.attrs["Config"].get("Env") or [])
    return {key: value for key, _, value in pairs}


def remove_test_containers(client: docker.DockerClient, project: str | None = None) -> int:
    """Force-remove containers labelled TEST_LABEL=1 (only `project`'s if given); return count."""
    wanted = [f"{TEST_LABEL}=1"]
    if project is not None:
        wanted.append(f"com.docker.compose.project={project}")
    removed = 0
    for container in client.containers.list(all=True, filters={"label": wanted}):
        try:
            container.remove(force=True)
            removed += 1
        except NotFound:
            pass
    return removed


@dataclass
class Engine:
    """A Docker engine of its own, as on a second host: its own engine ID, data and socket."""

    url: str
    client: docker.DockerClient
    identity: str


@contextmanager
def second_engine(root: Path) -> Iterator[Engine]:
    """Start a second ``dockerd`` (root only) with its data, state, socket and key under
    ``root`` (keep it short: unix socket paths are limited to 108 bytes), in a network
    namespace of its own: without a bridge (containers take ``network_mode="none"``), it
    would otherwise delete the host's ``docker0`` as it starts. Builds the stand-in image
    there; stops the engine and removes its containers afterwards."""
    if shutil.which("dockerd") is None or shutil.which("unshare") is None:
        raise DockerUnavailable("dockerd or unshare is not installed")
    if os.geteuid() != 0:
        raise DockerUnavailable("a second Docker engine needs root")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "daemon.json"
    # Docker up to 22 takes its engine ID from a key file (/etc/docker/key.json, shared with
    # the first engine unless moved); later ones from the data root.
    version = re.search(r"version (\d+)\.", subprocess.run(
        ["dockerd", "--version"], capture_output=True, text=True).stdout)
    major = int(version.group(1)) if version else 99
    config.write_text(json.dumps({"deprecated-key-path": str(root / "key.json")}
                                 if major < 23 else {}))
    url = f"unix://{root / 'docker.sock'}"
    clients: list[docker.DockerClient] = []

    def answering() -> bool:
        if process.poll() is not None:
            raise DockerUnavailable("the second dockerd exited: " + (
                root / "dockerd.log").read_text(errors="replace")[-1500:])
        try:  # the client asks the engine's API version as it is made
            clients.append(docker.DockerClient(base_url=url, timeout=120))
        except DockerException:
            return False
        return True

    with (root / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--net", "--", "dockerd", "--config-file", str(config),
             "--data-root", str(root / "data"), "--exec-root", str(root / "run"),
             "--pidfile", str(root / "dockerd.pid"), "-H", url, "--bridge=none",
             "--iptables=false", "--ip-masq=false"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(answering, timeout=60, interval=0.2, what="the second dockerd to answer")
        [client] = clients
        build_standin_image(client)
        yield Engine(url, client, str(client.info()["ID"]))
    finally:
        for client in clients:
            with suppress(DockerException):
                remove_test_containers(client)
            client.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
