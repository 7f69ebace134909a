"""Building the repository's Dockerfile on a machine where no image registry can be reached.

The base is Debian bookworm with Debian's Python, made by scripts/build-base-image.sh
(debootstrap, then ``docker import``) and kept while that script is unchanged. The image is
built from exactly what .dockerignore lets through, plus a wheels/ directory that the host's pip
fills for the base's Python, so the build itself needs no network (``--build-arg WHEELS``).
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, BuildError
from docker.models.images import Image
from docker.utils.build import exclude_paths

from exporter import __version__
from tests.docker_support import TEST_LABEL
from tests.support import ROOT

BASE_TAG = "wa-exporter-base:test"  # kept between runs; rebuilt when the script changes
BASE_SCRIPT = ROOT / "scripts" / "build-base-image.sh"
MISSING_PREREQUISITE = 3  # the script's exit code when root, docker or debootstrap is missing
PYTHON_VERSION_LABEL = "wa-exporter.python-version"  # set on the base by the script
BASE_GLIBC_MINOR = 36  # bookworm's glibc 2.36: the base runs manylinux wheels up to 2_36
WHEELS = "wheels"  # in the build context; .dockerignore lets it through
BUILD_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12})\s*$")  # classic builder: each step's image


class ImageUnavailable(RuntimeError):
    """Something the build needs on this machine (root, docker, debootstrap) is missing."""


@dataclass
class BuiltImage:
    """The exporter image, and every image its build made (the builder stage's too)."""

    image: Image
    step_images: list[str] = field(default_factory=list)
    seconds: float = 0.0


def ensure_base_image(client: docker.DockerClient) -> Image:
    """Build the base with the script, or reuse it when its recipe label matches."""
    proc = subprocess.run([str(BASE_SCRIPT), BASE_TAG], capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode == MISSING_PREREQUISITE:
        raise ImageUnavailable(proc.stderr.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"{BASE_SCRIPT.name} failed ({proc.returncode}): "
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return client.images.get(BASE_TAG)


def context_paths() -> list[str]:
    """The repository paths .dockerignore lets into the build context."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    return sorted(exclude_paths(str(ROOT), patterns))


def download_wheels(dest: Path, python_version: str) -> None:
    """Fetch binary wheels of the dependencies and build requirements for that Python."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]
    arch = platform.machine()
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(BASE_GLIBC_MINOR, 4, -1)]
    platforms += [f"manylinux{alias}_{arch}" for alias in ("2014", "2010", "1")]
    abi = "cp" + python_version.replace(".", "")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
         "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
         "--abi", abi, "--abi", "abi3", "--abi", "none",
         *(arg for name in platforms for arg in ("--platform", name)), *requirements],
        capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download for Python {python_version} failed: "
                           f"{proc.stderr[-3000:]}")


def build_exporter_image(client: docker.DockerClient, base: Image, tag: str) -> BuiltImage:
    """Build the Dockerfile on ``base`` offline, from the context .dockerignore defines."""
    python_version = base.labels[PYTHON_VERSION_LABEL]
    with tempfile.TemporaryDirectory(prefix="wa-exporter-ctx-") as tmp:
        context = Path(tmp)
        for relative in context_paths():
            source = ROOT / relative
            if source.is_dir():
                (context / relative).mkdir(parents=True, exist_ok=True)
            else:
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, context / relative)
        download_wheels(context / WHEELS, python_version)
        started = time.monotonic()
        try:
            image, log = client.images.build(
                path=str(context), tag=tag, rm=True, forcerm=True, pull=False,
                labels={TEST_LABEL: "1"},
                buildargs={"BASE_IMAGE": base.id, "WHEELS": WHEELS, "VERSION": __version__})
        except BuildError as exc:
            build_log = list(exc.build_log)
            remove_step_images(client, _step_images(build_log), keep=base.id)
            output = "".join(str(entry.get("stream", entry)) for entry in build_log)
            raise RuntimeError(f"docker build failed: {exc.msg}\n{output[-4000:]}") from exc
    return BuiltImage(image, _step_images(log), time.monotonic() - started)


def _step_images(log: Iterable[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for entry in log:
        for line in str(entry.get("stream", "")).splitlines():
            if match := BUILD_STEP_IMAGE.match(line):
                ids.append(match.group(1))
    return ids


def remove_exporter_image(client: docker.DockerClient, built: BuiltImage, base: Image) -> None:
    """Remove the image, with the untagged layers under it, and the builder stage's images."""
    client.images.remove(built.image.id, force=True)
    remove_step_images(client, built.step_images, keep=base.id)


def remove_step_images(client: docker.DockerClient, step_images: list[str], keep: str) -> None:
    """Remove a build's untagged step images, newest first, so each takes its parents along."""
    for image_id in reversed(step_images):
        try:
            image = client.images.get(image_id)
            if image.id != keep and not image.tags:
                client.images.remove(image.id)
        except APIError:
            pass  # gone with a child already, or another image or container builds on it
