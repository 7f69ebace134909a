"""cleanup's targets, as a decision asks for them: from the Docker engine now, but never
waiting on it longer than LOOKUP_SECONDS, however it hangs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter.actions.base import UnknownTarget
from exporter.actions.cleanup import LOOKUP_SECONDS, CleanupAction
from exporter.config import CleanupSettings
from exporter.sources.docker import ContainerDirectory
from tests.unit.fakes import FakeContainer, FakeDockerApi, compose_settings, fake_engine


@dataclass
class HangingApi(FakeDockerApi):
    """Lists the containers only once ``answer`` is set, as an engine that accepts and then
    says nothing; ``info`` names the engine."""

    answer: threading.Event = field(default_factory=threading.Event)

    def containers(self, all: bool = False) -> list[dict[str, Any]]:  # docker-py names it all
        self.calls.append("waiting")
        self.answer.wait(10)
        return super().containers(all)

    def info(self) -> dict[str, str]:
        return {"ID": "ENGINE", "Name": "host-a"}


@pytest.fixture
def api() -> HangingApi:
    api = HangingApi([FakeContainer("wa-web", "waweb"), FakeContainer("wa-core", "wacore")])
    yield api
    api.answer.set()


def test_a_hung_engine_rejects_within_the_lookup_time_and_is_asked_once(api: HangingApi) -> None:
    directory = ContainerDirectory(fake_engine(api), compose_settings())
    cleanup = CleanupAction(directory, CleanupSettings())
    started = time.monotonic()
    with pytest.raises(UnknownTarget, match=r"has not answered for 1\.\ds"):
        cleanup.targets(None)
    assert LOOKUP_SECONDS - 0.1 < time.monotonic() - started < LOOKUP_SECONDS + 0.5
    started = time.monotonic()
    for _ in range(5):  # the lookup still hangs: each asks it again, at once
        with pytest.raises(UnknownTarget, match="has not answered"):
            cleanup.targets("wa-web")
    assert time.monotonic() - started < 0.2
    assert api.calls == ["waiting"]
    api.answer.set()
    deadline = time.monotonic() + 5
    while cleanup._lookup is not None and not cleanup._lookup.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert cleanup.targets(None) == ["wa-core", "wa-web"]
    assert cleanup.lock_key("wa-web") == "cleanup:ENGINE@host-a/wa-web"
