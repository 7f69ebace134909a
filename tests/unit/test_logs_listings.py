"""The logs collector's listings in exec mode, with a stand-in for ``docker exec``: a bounded
set of threads kept from one refresh to the next, a hung listing left behind and not started
twice, a failed one marking its container only."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import wait

import pytest

from exporter.collectors.logs import LogsCollector
from exporter.config import LogsSettings
from exporter.errors import Degraded
from exporter.sources.docker import DockerEngine, DockerError, WaContainer
from exporter.sources.files import LogEntry
from tests.unit.test_logs_collector import KnownContainers


class Listings:
    """Stands in for ``list_logs``: counts the listings per container, and the threads and
    concurrency they ran with; a container in ``hang`` waits for ``release``."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.threads: set[threading.Thread] = set()
        self.hang: set[str] = set()
        self.fail: dict[str, DockerError] = {}
        self.release = threading.Event()
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, engine: DockerEngine, container: WaContainer,
                 log_dir: str) -> list[LogEntry]:
        with self._lock:
            self.calls[container.name] += 1
            self.threads.add(threading.current_thread())
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if container.name in self.hang:
                assert self.release.wait(10)
            else:
                threading.Event().wait(0.02)  # long enough for the others to overlap
            if container.name in self.fail:
                raise self.fail[container.name]
            return [LogEntry("live", b"web.log", 10, 1_700_000_000.0)]
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Listings:
    fake = Listings()
    monkeypatch.setattr("exporter.collectors.logs.list_logs", fake)
    return fake


def collector(*names: str, timeout: float = 5.0) -> LogsCollector:
    containers = [WaContainer(str(i), name, "webapp", True) for i, name in enumerate(names)]
    return LogsCollector(KnownContainers(*containers), LogsSettings(timeout=timeout))


def failed_containers(error: Degraded) -> dict[str, float]:
    listed = next(f for f in error.families if f.name == "whatsapp_log_listing_success")
    return {s.labels["container"]: s.value for s in listed.samples if s.value == 0}


def test_listings_run_four_at_a_time_on_threads_kept_between_refreshes(
        listings: Listings) -> None:
    logs = collector(*(f"wa_{i}" for i in range(10)))
    logs.refresh()
    first = set(listings.threads)
    logs.refresh()
    logs.refresh()
    assert listings.calls == {f"wa_{i}": 3 for i in range(10)}
    assert 1 < listings.most_in_flight <= 4
    assert listings.threads == first and len(first) == 4
    assert all(t.daemon and t.name.startswith("logs-listing") for t in first)
    logs.close()


def test_a_hung_listing_is_left_behind_and_not_started_twice(listings: Listings) -> None:
    listings.hang.add("wa_hung")
    logs = collector("wa_hung", "wa_web", timeout=0.25)
    for _ in range(2):
        with pytest.raises(Degraded) as raised:
            logs.refresh()
        assert str(raised.value) == "log listing failed: listing in wa_hung did not finish in time"
        assert failed_containers(raised.value) == {"wa_hung": 0}
    assert listings.calls == {"wa_hung": 1, "wa_web": 2}

    listings.release.set()
    listings.hang.clear()
    wait([logs._unfinished["0"]], 5)  # it ends between refreshes: the next lists anew
    assert logs.refresh()
    assert listings.calls == {"wa_hung": 2, "wa_web": 3}
    logs.close()


def test_a_failed_listing_marks_its_container_only(listings: Listings) -> None:
    listings.fail["wa_core"] = DockerError("exec in wa_core failed: boom", kind="exec")
    logs = collector("wa_core", "wa_web")
    with pytest.raises(Degraded) as raised:
        logs.refresh()
    assert str(raised.value) == "log listing failed: exec in wa_core failed: boom"
    assert failed_containers(raised.value) == {"wa_core": 0}
    logs.close()


def test_an_engine_out_of_reach_fails_the_whole_refresh(listings: Listings) -> None:
    gone = DockerError("Docker engine at unix:///var/run/docker.sock is unreachable",
                       kind="connect")
    listings.fail["wa_web"] = gone
    logs = collector("wa_web")
    with pytest.raises(DockerError) as raised:
        logs.refresh()
    assert raised.value is gone
    logs.close()
