"""Building the exporter's image the way the README shows: ``make image``, on a machine where no
image registry can be reached.

``make image`` (scripts/build-image.sh) makes the Debian base with debootstrap, kept while
scripts/build-base-image.sh is unchanged, downloads the wheels for the base's Python and builds
the Dockerfile with them, offline. The test builds under a name of its own, so a developer's
``wa-exporter:latest`` is left alone, and removes what the build made afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field

import docker
from docker.errors import APIError
from docker.models.images import Image
from docker.utils.build import exclude_paths

from exporter import __version__
from tests.docker_support import TEST_LABEL
from tests.support import ROOT

BASE_TAG = "wa-exporter-base:bookworm"  # the Makefile's BASE_IMAGE, shared with `make image`
MISSING_PREREQUISITE = 3  # the scripts' exit code when root, docker or debootstrap is missing
BUILD_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12})\s*$")  # classic builder: each step's image


class ImageUnavailable(RuntimeError):
    """Something the build needs on this machine (root, docker, debootstrap) is missing."""


@dataclass
class BuiltImage:
    """The exporter image, the tags ``make image`` gave it, and every image its build made
    (the builder stage's too)."""

    image: Image
    tags: list[str]
    base: Image
    step_images: list[str] = field(default_factory=list)
    seconds: float = 0.0
    version_output: str = ""  # what `IMAGE:<version> --version` printed at the end of the build


def context_paths() -> list[str]:
    """The repository paths .dockerignore lets into the build context."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    return sorted(exclude_paths(str(ROOT), patterns))


def make_image(client: docker.DockerClient, name: str) -> BuiltImage:
    """``make image IMAGE=name``: the tags ``name:<version>`` and ``name:latest``."""
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={name}",
         f"DOCKER_BUILD_FLAGS=--label {TEST_LABEL}=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"})  # the step images are named in the output
    steps = [match.group(1) for line in proc.stdout.splitlines()
             if (match := BUILD_STEP_IMAGE.match(line))]
    if proc.returncode == MISSING_PREREQUISITE:
        raise ImageUnavailable(proc.stderr.strip()[-2000:])
    if proc.returncode != 0:
        remove_step_images(client, steps, keep=_base_id(client))
        raise RuntimeError(f"make image failed ({proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}")
    tags = [f"{name}:{__version__}", f"{name}:latest"]
    version_lines = [line for line in proc.stdout.splitlines()
                     if line.startswith("wa-exporter ")]
    return BuiltImage(client.images.get(tags[0]), tags, client.images.get(BASE_TAG), steps,
                      time.monotonic() - started, version_lines[-1] if version_lines else "")


def _base_id(client: docker.DockerClient) -> str:
    try:
        return str(client.images.get(BASE_TAG).id)
    except APIError:
        return ""


def remove_exporter_image(client: docker.DockerClient, built: BuiltImage) -> None:
    """Remove the image's tags, with the untagged layers under it, and the builder stage's
    images; the base stays for the next build."""
    for tag in built.tags:
        client.images.remove(tag, force=True)
    remove_step_images(client, built.step_images, keep=built.base.id)


def remove_step_images(client: docker.DockerClient, step_images: list[str], keep: str) -> None:
    """Remove a build's untagged step images, newest first, so each takes its parents along."""
    for image_id in reversed(step_images):
        try:
            image = client.images.get(image_id)
            if image.id != keep and not image.tags:
                client.images.remove(image.id)
        except APIError:
            pass  # gone with a child already, or another image or container builds on it
