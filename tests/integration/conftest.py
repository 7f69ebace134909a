"""Fixtures the Docker integration tests share."""

from __future__ import annotations

import docker
import pytest


@pytest.fixture
def client(docker_client: docker.DockerClient, standin_image: str) -> docker.DockerClient:
    """The Docker engine, with the stand-in WA image built."""
    return docker_client


@pytest.fixture
def project(compose_project: str) -> str:
    return compose_project
