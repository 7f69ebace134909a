"""``make demo``: build a small WA world under ``.demo/`` and run the exporter on it.

- ``.demo/db/``: SQLite databases standing in for the WA client's (``WA_DB_ENGINE=SQLITE``,
  ``WA_DB_HOSTNAME`` is this directory): one with a ``messages`` table, one without;
- ``.demo/logs/<container>/``: the ``/var/log/whatsapp`` trees of a webapp and a coreapp,
  read as bind-mounted host paths (``collectors.logs.mode: host``), the coreapp's archive
  holding more than the 30 files the WA guide keeps;
- ``.demo/media/``: a media volume with a few hundred files;
- the WA API stand-in from ``tests/wa_standin`` on a loopback port, backed by that table;
- ``.demo/prometheus.yml``: a Prometheus configuration for the demo (none runs in it), with
  the rules of ``alerts/``;
- ``.demo/db.env`` (the database and WA API variables, as a WA install's ``db.env`` holds
  them) and ``.demo/demo.yml`` (the settings): what the exporter runs with, and what the CLI
  commands the demo prints take to work on the same world;
- the exporter on ``--web.listen-address`` (default ``:9864``) until Ctrl-C, SIGTERM or
  SIGHUP, any of which stops both children before the demo exits.

Each run starts from a fresh world: ``.demo/`` is written anew, so the table holds its
60,000 rows again and the cooldowns and audit log of the last run are gone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import sqlalchemy as sa

from tests.processes import stop_process
from tests.wa_standin.schema import create_messages_table, insert_messages

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "wademo_"
TOKEN = (ROOT / "demo" / "webhook-token").read_text().strip()
ROWS = 60_000


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """One of STOP_SIGNALS arrived: unwind to the code that stops the children."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


class Children:
    """The processes the demo started, stopped newest first however the demo ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], **kwargs: object) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(args, cwd=ROOT, text=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for signum in STOP_SIGNALS:  # a second Ctrl-C must not cut the stopping short
            signal.signal(signum, signal.SIG_IGN)
        for proc in reversed(self.procs):
            stop_process(proc)


def build_world(world: Path) -> Path:
    """A fresh world: whatever the last run left (fewer rows after a GC, cooldowns) goes."""
    if world.exists():
        print(f"demo: starting from a fresh world (replacing the last run's {world})",
              flush=True)
        shutil.rmtree(world)
    db_dir = world / "db"
    db_dir.mkdir(parents=True)
    store = db_dir / f"{PREFIX}messagestore.db"
    print(f"demo: writing {ROWS:,} messages to {store}", flush=True)
    engine = sa.create_engine(f"sqlite:///{store}")
    create_messages_table(engine)
    insert_messages(engine, ROWS, read_fraction=0.4)
    engine.dispose()
    other = db_dir / f"{PREFIX}contacts.db"  # a WA database without messages: not reported
    engine = sa.create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE contacts (id INTEGER PRIMARY KEY, wa_id TEXT)"))
    engine.dispose()
    return db_dir


LOG_TREES = {
    "demo-waweb-1": (("web.log", 3_500_000), ("access.log", 900_000), ("error.log", 12_000)),
    "demo-wacore-1": (("coreapp.log", 16_200_000), ("wa-service-coreapp.log", 2_100_000)),
}
ARCHIVED = {"demo-waweb-1": 12, "demo-wacore-1": 34}


def build_logs(world: Path) -> Path:
    """Live logs and archives like the WA containers keep (sparse files: sizes cost no disk)."""
    root = world / "logs"
    day = 86400
    for container, live in LOG_TREES.items():
        archive = root / container / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        for name, size in live:
            with (root / container / name).open("ab") as fh:
                fh.truncate(size)
        for i in range(ARCHIVED[container]):
            path = archive / f"{live[0][0]}.{20261001 + i}.gz"
            path.write_bytes(b"\x1f\x8b" + bytes(200 + i))
            when = 1_790_000_000 - (ARCHIVED[container] - i) * day
            os.utime(path, (when, when))
    return root


def build_media(world: Path) -> Path:
    media = world / "media"
    for i in range(400):
        folder = media / f"{i % 16:02x}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"media-{i:05d}.jpg").write_bytes(os.urandom(2048 + (i * 97) % 30000))
    return media


def start_wa_api(children: Children, db_dir: Path, callback_url: str) -> str:
    """The WA API stand-in; its GC callbacks go to the exporter, as the WA webhook would."""
    proc = children.start(
        [sys.executable, "-m", "tests.wa_standin", "--listen", "127.0.0.1:0",
         "--db-url", f"sqlite:///{db_dir / (PREFIX + 'messagestore.db')}",
         "--callback-url", callback_url,
         "--callback-header", f"Authorization: Bearer {TOKEN}", "--gc-delay", "1"],
        stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("LISTENING "):
        raise SystemExit(f"demo: the simulated WA API did not start: {line!r}")
    return line.split(" ", 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--web.listen-address", dest="address",
                        default=os.environ.get("DEMO_ADDRESS", ":9864"))
    parser.add_argument("--world", type=Path, default=ROOT / ".demo",
                        help="directory the demo's world is written to, anew each run "
                        "(default .demo)")
    args = parser.parse_args()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
    children = Children()
    try:
        return run(args.address, args.world.resolve(), children)
    except Stopped as stop:
        print(f"demo: {stop}: stopping the exporter and the simulated WA API", flush=True)
        return 128 + stop.signum
    finally:
        children.stop()


def write_db_env(world: Path, db_dir: Path, wa_url: str) -> Path:
    """The demo's ``db.env``: what a WA install's holds (the SQLite engine stands in for
    MySQL), plus the WA API's address and login, which the exporter reads from it too."""
    path = world / "db.env"
    path.write_text(f"# Written by make demo for this run; the exporter and the CLI read it.\n"
                    f"WA_DB_ENGINE=SQLITE\nWA_DB_HOSTNAME={db_dir}\nWA_DB_NAME_PREFIX={PREFIX}\n"
                    f"WA_WEB_URL={wa_url}\nWA_WEB_USERNAME=admin\nWA_WEB_PASSWORD=secret\n")
    return path


def shown(path: Path) -> str:
    """``path`` as a person types it from the current directory (relative when under it)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def write_prometheus_config(world: Path, port: str) -> Path:
    """A Prometheus configuration for the demo's exporter, with the rules of alerts/."""
    path = world / "prometheus.yml"
    path.write_text((ROOT / "demo" / "prometheus.yml").read_text().format(
        rules=ROOT / "alerts" / "wa-exporter.rules.yml", port=port))
    return path


def prometheus_lines(config: Path, world: Path) -> str:
    """How to run Prometheus on the demo, where one is installed (Debian: prometheus)."""
    if shutil.which("prometheus") is None:
        return ("      No Prometheus runs in the demo; with one (apt-get install prometheus) the "
                "demo\n      prints how to point it at this exporter with the rules of "
                "alerts/.\n")
    data = shown(world / "prometheus")
    return f"""\
      No Prometheus runs in the demo; to evaluate the alerts and recording rules of alerts/
      on it (what the dashboard's panels read), run in another terminal:
        prometheus --config.file {shown(config)} --storage.tsdb.path {data} \\
          --web.listen-address 127.0.0.1:9091
"""


def cli_lines(db_env: Path, config: Path, port: str) -> str:
    """How to run the CLI against this demo: the same db.env and settings as its exporter,
    and a run through the exporter itself (its runner, metrics and GC callbacks)."""
    command = shown(Path(sys.executable).parent / "wa-exporter")
    flags = f"--db.env-file {shown(db_env)} --config.file {shown(config)}"
    return f"""\
      Run the CLI against it, from another terminal in this directory:
        {command} check-config --connect {flags}
        {command} upgrade-check {flags}
        {command} run gc --exporter.url http://localhost:{port} --config.file {shown(config)}
"""


def run(address: str, world: Path, children: Children) -> int:
    db_dir = build_world(world)
    logs, media = build_logs(world), build_media(world)
    port = address.rsplit(":", 1)[1]
    wa_url = start_wa_api(children, db_dir, f"http://127.0.0.1:{port}/webhook/wa-callback")
    db_env = write_db_env(world, db_dir, wa_url)
    config = world / "demo.yml"
    config.write_text((ROOT / "demo" / "demo.yml").read_text().format(
        logs=logs, media=media, state=world / "state", token=ROOT / "demo" / "webhook-token"))
    prometheus = write_prometheus_config(world, port)
    print(f"""
demo: the simulated WA API listens on {wa_url}
demo: the exporter starts on {address}; open
        http://localhost:{port}/metrics
        http://localhost:{port}/
      Fire the webhook as Alertmanager would (message GC on the demo table):
        curl -s -H 'Authorization: Bearer {TOKEN}' -H 'Content-Type: application/json' \\
          -d @demo/alert.json http://localhost:{port}/webhook/alertmanager
      then watch http://localhost:{port}/actions and whatsapp_gc_* in /metrics.
{cli_lines(db_env, config, port)}{prometheus_lines(prometheus, world)}\
      Ctrl-C (or SIGTERM, SIGHUP) stops everything; the next run starts afresh.
""", flush=True)
    # Only the demo's db.env speaks for the world: no WA_* variable of this shell wins over it.
    env = {name: value for name, value in os.environ.items() if not name.startswith("WA_")}
    exporter = children.start(
        [sys.executable, "-m", "exporter", "--web.listen-address", address,
         "--db.env-file", str(db_env), "--config.file", str(config)], env=env)
    return exporter.wait()


if __name__ == "__main__":
    raise SystemExit(main())
