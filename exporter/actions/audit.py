"""The append-only audit log (JSON lines) and the small state file that survives restarts.

Every decision and every outcome is one line, written to the file before the call
returns (so a killed process loses nothing); lines that start or finish a run are also
fsynced, so they survive a power cut too. The log rotates by size (``audit.jsonl`` ->
``audit.jsonl.1`` …). If a line cannot be written (a full disk), it is kept in memory and
written before the next one, so nothing is lost while the process lives;
``whatsapp_audit_write_errors_total`` and ``whatsapp_audit_pending_records`` say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Text copied from outside (alert labels, reasons quoting them) is clipped to this many
# characters, and a record is at most MAX_RECORD_BYTES, so a few large requests cannot
# rotate every earlier record away.
MAX_TEXT = 200
MAX_RECORD_BYTES = 16 * 1024
MAX_LIST_ITEMS = 100
# The records of the latest runs, by run id, for a person following one run
# (``wa-exporter run --exporter.url``): this many runs, this many records each.
KEEP_RUNS = 64
KEEP_RUN_RECORDS = 256


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text``, or its first ``limit`` characters marked as cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[cut {len(text) - limit} characters]"


def _clipped(value: Any) -> Any:
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, dict):
        return {clip(str(k)): _clipped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        kept = [_clipped(v) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            kept.append(f"…[cut {len(value) - MAX_LIST_ITEMS} items]")
        return kept
    return value


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str, separators=(",", ":")) + "\n"


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 5,
                 keep_recent: int = 200) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep_recent)
        self._runs: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self.write_errors = 0
        self._fd = -1  # kept open between records (see _open)
        self._file: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of what _fd writes to
        path.parent.mkdir(parents=True, exist_ok=True)
        self._recent.extend(read_tail(path, keep_recent))

    def append(self, record: dict[str, Any], *, sync: bool = False) -> dict[str, Any]:
        """Write ``record`` (with a ``ts``); ``sync`` also fsyncs it. Return it as written."""
        record = {"ts": round(time.time(), 3), **record}
        line = _line(record)
        if len(line) > MAX_RECORD_BYTES:
            record = _clipped(record)
            line = _line(record)
        if len(line) > MAX_RECORD_BYTES:  # many fields: keep what says what happened
            record = {k: v for k, v in record.items()
                      if k in ("ts", "event", "action", "outcome", "result", "run_id",
                               "trigger")} | {"cut": f"{len(line)} bytes"}
            line = _line(record)
        with self._lock:
            self._recent.append(record)
            self._index_run(record)
            self._pending.append(line)
            try:
                self._write_pending(sync)
            except OSError as exc:
                self.write_errors += 1
                if self.write_errors == 1 or len(self._pending) == 1:
                    log.error("audit log write failed; records kept in memory",
                              extra={"path": str(self.path), "err": exc.strerror or str(exc),
                                     "pending": len(self._pending)})
        return record

    def flush(self) -> bool:
        """Try once more to write the records kept in memory (at exit); True if none is left."""
        with self._lock:
            if not self._pending:
                return True
            try:
                self._write_pending(sync=True)
            except OSError:
                log.error("audit records lost at exit: the log cannot be written",
                          extra={"path": str(self.path), "pending": len(self._pending)})
                return False
            return True

    def _write_pending(self, sync: bool) -> None:
        """Append every pending line, or none: a write that fails half-way is cut off, so the
        whole batch is written again, in order, once there is room."""
        data = "".join(self._pending).encode("utf-8")
        fd, size = self._open()
        if size >= self.max_bytes:
            self._close()
            self._rotate()
            fd, size = self._open()
        try:
            # Unbuffered: nothing is left in a buffer to be written after the cut.
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            self._close()
            raise
        self._pending.clear()

    def _open(self) -> tuple[int, int]:
        """The log's descriptor and size. The descriptor is kept between records (one
        ``stat`` and one ``write`` a record), and opened again when the path no longer names
        its file: rotated by ``wa-exporter run`` in another process, or removed by hand."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and self._fd >= 0 and (st.st_dev, st.st_ino) == self._file:
            return self._fd, st.st_size
        self._close()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        opened = os.fstat(fd)
        self._fd, self._file = fd, (opened.st_dev, opened.st_ino)
        return fd, opened.st_size

    def close(self) -> None:
        with self._lock:
            self._close()

    def __del__(self) -> None:
        self._close()

    def _close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)[-limit:]

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        """The records of one of the latest :data:`KEEP_RUNS` runs written here, oldest
        first: its decision, progress and outcome, however many other records came between."""
        with self._lock:
            return list(self._runs.get(run_id, ()))

    def _index_run(self, record: dict[str, Any]) -> None:
        run_id = record.get("run_id")
        if not isinstance(run_id, str):
            return
        records = self._runs.get(run_id)
        if records is None:
            records = self._runs[run_id] = deque(maxlen=KEEP_RUN_RECORDS)
            while len(self._runs) > KEEP_RUNS:
                self._runs.popitem(last=False)
        records.append(record)

    def _rotate(self) -> None:
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))


def read_tail(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` records of one audit file (all with None), oldest first; nothing
    if it is missing or unreadable. Read-only: other processes may be appending."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for line in lines if limit is None else lines[-limit:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
        if isinstance(record, dict):
            records.append(record)
    return records


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


# The fields of a run in flight, as ActionRun records them; only ``action`` is required.
_RUN_FIELDS: dict[str, Callable[[Any], bool]] = {
    "action": _text, "trigger": _text, "host": _text, "instance": _text, "started": _number,
    "pid": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "targets": lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
    "previous_start": lambda v: isinstance(v, dict) and all(
        t is None or _number(t) for t in v.values())}


def _run(run: Any) -> bool:
    return isinstance(run, dict) and "action" in run and all(
        check(run[name]) for name, check in _RUN_FIELDS.items() if name in run)


# The sections of the state file, each a map from a key (an action, action:container, a
# database, a run ID) to what its readers rely on; an entry of another type is dropped.
SECTIONS: dict[str, Callable[[Any], bool]] = {
    "last_start": _number, "last_run": _number, "last_success": _number,
    "roles": _text, "gc_rows_after": _number, "running": _run}


def _checked(data: Any) -> tuple[dict[str, Any], list[str]]:
    """``data`` with every section a map of entries of the right type, and what was dropped
    to make it so. Keys that are not sections are kept as they are: nothing reads them."""
    if not isinstance(data, dict):
        return _empty(), [f"everything (a JSON {type(data).__name__}, not an object)"]
    checked, dropped = dict(data), []
    for section, valid in SECTIONS.items():
        entries = data.get(section, {})
        if not isinstance(entries, dict):
            checked[section] = {}
            dropped.append(f"{section} (not a map)")
            continue
        checked[section] = {k: v for k, v in entries.items() if valid(v)}
        dropped += [f"{section}.{k}" for k in entries if k not in checked[section]]
    return checked, dropped


def _empty() -> dict[str, Any]:
    return {section: {} for section in SECTIONS}


class StateFile:
    """Small JSON state (cooldowns, runs in flight, last results), replaced atomically.

    Shared with ``wa-exporter run`` in another process: every change re-reads the file under
    an ``flock``, so neither process overwrites the other's cooldowns. A file that is not
    JSON, or holds entries of the wrong type (edited by hand, cut short by a full disk), is
    read without them: each is logged, and the file as found is kept as ``state.json.broken``
    before the next change replaces it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._unsaved = False  # the last write failed: memory is ahead of the file
        self.data: dict[str, Any] = self._load()

    def read(self) -> dict[str, Any]:
        """The current state on disk (kept in ``data`` as well); re-parsed only if it changed."""
        with self._lock:
            if not self._unsaved and self._stamp() != self._seen:
                self.data = self._load()
            return self.data

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self) -> dict[str, Any]:
        self._seen = self._stamp()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _empty()
        except OSError as exc:
            log.error("state file unreadable; starting without cooldowns",
                      extra={"path": str(self.path), "err": exc.strerror or str(exc)})
            return _empty()
        try:
            data, dropped = _checked(json.loads(raw))
        except (ValueError, RecursionError) as exc:
            data, dropped = _empty(), [f"everything (not JSON: {clip(str(exc), 80)})"]
        if dropped:
            aside = self.path.with_name(self.path.name + ".broken")
            try:
                aside.write_bytes(raw)
            except OSError as exc:
                aside = Path(f"nowhere: {exc.strerror or exc}")
            log.error("state file entries dropped: not what the exporter writes", extra={
                "path": str(self.path), "dropped": clip(", ".join(dropped)),
                "kept_as": str(aside)})
        return data

    def update(self, change: Any) -> None:
        """Apply ``change(data)`` and write the file; a failed write is logged, not raised."""
        with self._lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                with open(self.path.with_name(self.path.name + ".lock"), "a") as guard:
                    fcntl.flock(guard, fcntl.LOCK_EX)
                    if not self._unsaved:
                        self.data = self._load()
                    change(self.data)
                    with open(tmp, "w", encoding="utf-8") as fh:
                        json.dump(self.data, fh, separators=(",", ":"))
                        fh.flush()
                        os.fsync(fh.fileno())
                    tmp.replace(self.path)
                self._seen = self._stamp()
                self._unsaved = False
            except OSError as exc:
                # Keep the change in memory (cooldowns hold) and write it with the next one.
                if not self._unsaved:
                    log.error("state file write failed; kept in memory", extra={
                        "path": str(self.path), "err": exc.strerror or str(exc)})
                self._unsaved = True
                with contextlib.suppress(OSError):
                    tmp.unlink()
