"""Is the install ready for a WA client upgrade? The facts, the verdict, and how they print.

Pure: :mod:`exporter.upgrade.gather` reads the facts from the world; this module judges and
renders them, for ``wa-exporter upgrade-check`` and for ``whatsapp_upgrade_ready``.

The verdict follows Meta's guide: a ``messages`` table above 2 million rows is *large* and
should get message GC around an upgrade, so every table must be under the bound. A message
GC that is running (wait for it) or whose last run failed (the WA client has trouble) also
blocks. Containers down, an old or missing GC success and a nearly full media volume are
shown as warnings: worth knowing before an upgrade, but not what the guide asks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from exporter.readiness import DatabaseFacts, GcFacts, database_ready


@dataclass(frozen=True)
class ContainerFacts:
    name: str
    role: str
    running: bool
    image: str
    version: str


@dataclass(frozen=True)
class MediaFacts:
    volume: str
    path: str
    size_bytes: int | None = None
    avail_bytes: int | None = None
    error: str = ""

    @property
    def avail_ratio(self) -> float | None:
        if self.size_bytes is None or self.avail_bytes is None or not self.size_bytes:
            return None
        return self.avail_bytes / self.size_bytes


@dataclass(frozen=True)
class ClientFacts:
    """The WA client's own figures, read once: what an upgrade would interrupt (it restarts
    the coreapps) and whether anything deletes old messages. None where not read."""

    pending_callbacks: float | None = None  # /v1/stats/db db_pending_callbacks
    pending_messages: float | None = None  # /v1/stats/db db_pending_messages
    callback_queue: float | None = None  # /v1/stats/app callback_queue_size
    message_gc_off: bool = False  # /v1/settings/application garbagecollector_enable.messages
    gc_scheduled: bool = True  # a schedule of this exporter runs message GC
    error: str = ""

    def warnings(self) -> list[str]:
        notes = [f"the WA client's own figures could not all be read: {self.error}"
                 ] if self.error else []
        for figure, what in ((self.pending_callbacks, "callbacks are pending in the WA "
                              "database"), (self.pending_messages, "messages are pending "
                              "(not yet sent) in the WA database"), (self.callback_queue,
                              "callbacks wait in the coreapps' queue")):
            if figure:
                notes.append(f"{figure:,.0f} {what}: an upgrade restarts the coreapps; let "
                             "them drain first")
        if self.message_gc_off and not self.gc_scheduled:
            notes.append("the WA client's own message GC is off and no schedule here runs "
                         "message GC: nothing deletes old messages")
        return notes

    def detail(self) -> str:
        def shown(value: float | None) -> str:
            return "?" if value is None else f"{value:,.0f}"

        return (f"pending callbacks {shown(self.pending_callbacks)}, pending messages "
                f"{shown(self.pending_messages)}, callback queue {shown(self.callback_queue)}; "
                f"client message GC {'off' if self.message_gc_off else 'on'}")


@dataclass
class Report:
    bound: int
    gc_max_age: float
    media_min_avail_ratio: float
    checked_at: float = field(default_factory=time.time)
    databases: list[DatabaseFacts] = field(default_factory=list)
    databases_error: str = ""  # the server could not be reached at all
    gc: GcFacts = field(default_factory=GcFacts)
    containers: list[ContainerFacts] = field(default_factory=list)
    containers_error: str = ""
    media: MediaFacts | None = None
    client: ClientFacts | None = None  # None: the WA API is not configured (or not relayed)
    last_actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # audit records

    # --- the verdict ------------------------------------------------------------------------

    def unknowns(self) -> list[str]:
        """What the verdict needs and could not be read: the check itself is incomplete
        (``upgrade-check`` exits 3, "cannot check", rather than 1)."""
        reasons = []
        if self.databases_error:
            reasons.append(f"the WA databases could not be read: {self.databases_error}")
        elif not self.databases:
            reasons.append("no WA database found (no database with the prefix and a messages "
                           "table): nothing to judge")
        reasons += [f"{db.name}: rows could not be counted: {db.error}"
                    for db in self.databases if db.rows is None]
        return reasons

    def blockers(self) -> list[str]:
        """Why the install is not ready, what could not be read first; empty when it is."""
        reasons = self.unknowns()
        for db in self.databases:
            if db.rows is not None and not db.ready(self.bound):
                reasons.append(f"{db.name}: messages holds {db.rows:,} rows, a large table "
                               f"(the guide: above {self.bound:,}); run message GC first, "
                               "e.g. upgrade-check --prepare")
        if self.gc.running:
            reasons.append("a message GC is running: wait for it to finish")
        if self.gc.failing:
            reasons.append(f"the last message GC ended {self.gc.last_result or 'without success'}"
                           ": see the audit log and the WA client's logs")
        return reasons

    def warnings(self) -> list[str]:
        notes = []
        if self.gc.running is None:
            notes.append(f"whether a GC is running is unknown: {self.gc.running_error}")
        if self.gc.last_success is None:
            notes.append("no successful message GC on record (the guide: once every 24 hours)")
        elif self.checked_at - self.gc.last_success > self.gc_max_age:
            notes.append(f"the last successful message GC is "
                         f"{format_age(self.checked_at - self.gc.last_success)} old "
                         "(the guide: once every 24 hours)")
        if self.containers_error:
            notes.append(f"WA containers could not be listed: {self.containers_error}")
        elif not self.containers:
            notes.append("no WA container found on this Docker engine")
        for c in self.containers:
            if not c.running:
                notes.append(f"container {c.name} ({c.role}) is not running")
        if self.media is not None:
            ratio = self.media.avail_ratio
            if self.media.error:
                notes.append(f"media volume {self.media.volume}: {self.media.error}")
            elif ratio is not None and ratio < self.media_min_avail_ratio:
                notes.append(f"media volume {self.media.volume} has only {ratio:.0%} free")
        if self.client is not None:
            notes += self.client.warnings()
        return notes

    @property
    def ready(self) -> bool:
        return not self.blockers()

    def verdict(self) -> str:
        if self.ready:
            return "ready: every messages table is under " \
                f"{self.bound:,} rows and no message GC is running or failing"
        if self.unknowns():
            return "cannot check: " + "; ".join(self.blockers())
        return "not ready: " + "; ".join(self.blockers())

    # --- output -----------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["databases"] = [dict(asdict(db), ready=database_ready(db, self.gc, self.bound))
                             for db in self.databases]
        data["gc"] = dict(asdict(self.gc), failing=self.gc.failing)
        if self.media is not None:
            data["media"] = dict(asdict(self.media), avail_ratio=self.media.avail_ratio)
        data.update(ready=self.ready, complete=not self.unknowns(), verdict=self.verdict(),
                    blockers=self.blockers(), warnings=self.warnings())
        return data

    def to_text(self) -> str:
        lines: list[list[str]] = [["WHAT", "NAME", "STATE", "DETAIL"]]
        for db in self.databases:
            rows = "?" if db.rows is None else f"{db.rows:,}{'' if db.exact else ' (estimate)'}"
            state = "ok" if db.ready(self.bound) else "LARGE" if db.rows is not None else "ERROR"
            lines.append(["database", db.name, state,
                          f"rows {rows} of {self.bound:,}" + (f": {db.error}" if db.error else "")])
        if self.databases_error:
            lines.append(["database", "-", "ERROR", self.databases_error])
        gc = self.gc
        state = ("RUNNING" if gc.running else "FAILING" if gc.failing
                 else "unknown" if gc.running is None else "idle")
        age = ("never" if gc.last_success is None else
               f"{_when(gc.last_success)} ({format_age(self.checked_at - gc.last_success)} ago)")
        lines.append(["message-gc", "-", state, f"last success {age}"
                      + (f"; last result {gc.last_result}" if gc.last_result else "")])
        for c in self.containers:
            lines.append(["container", c.name, "running" if c.running else "STOPPED",
                          f"{c.role} {c.image} version {c.version or '?'}"])
        if self.containers_error:
            lines.append(["container", "-", "ERROR", self.containers_error])
        if self.media is not None:
            m = self.media
            detail = m.error or (f"{format_bytes(m.avail_bytes)} free of "
                                 f"{format_bytes(m.size_bytes)} ({m.avail_ratio:.0%}) at {m.path}"
                                 if m.avail_ratio is not None else m.path)
            lines.append(["media", m.volume, "ERROR" if m.error else "ok", detail])
        if self.client is not None:
            client = self.client
            state = "ERROR" if client.error else "PENDING" if (
                client.pending_callbacks or client.pending_messages or client.callback_queue
            ) else "ok"
            lines.append(["wa-client", "-", state, client.detail()])
        for kind, record in sorted(self.last_actions.items()):
            detail = f"{_when(float(record.get('ts', 0)))} trigger {record.get('trigger', '?')}"
            lines.append(["last-action", kind, str(record.get("result", "?")), detail])
        widths = [max(len(row[i]) for row in lines) for i in range(3)]
        out = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
               + "  " + row[3] for row in lines]
        out += [f"warning: {w}" for w in self.warnings()]
        out.append(self.verdict())
        return "\n".join(out) + "\n"


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def format_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(timestamp))
