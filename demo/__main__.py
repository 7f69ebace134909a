"""``make demo``: build a small WA world under ``.demo/`` and run the exporter on it.

- ``.demo/db/``: SQLite databases standing in for the WA client's (``WA_DB_ENGINE=SQLITE``,
  ``WA_DB_HOSTNAME`` is this directory): one with a ``messages`` table, one without;
- the WA API stand-in from ``tests/wa_standin`` on a loopback port, backed by that table;
- the exporter on ``--web.listen-address`` (default ``:9864``) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tests.wa_standin.schema import create_messages_table, insert_messages

ROOT = Path(__file__).resolve().parent.parent
WORLD = ROOT / ".demo"
PREFIX = "wademo_"
TOKEN = (ROOT / "demo" / "webhook-token").read_text().strip()
ROWS = 60_000


def build_world() -> Path:
    db_dir = WORLD / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    store = db_dir / f"{PREFIX}messagestore.db"
    if not store.exists():
        print(f"demo: writing {ROWS:,} messages to {store.relative_to(ROOT)}", flush=True)
        engine = sa.create_engine(f"sqlite:///{store}")
        create_messages_table(engine)
        insert_messages(engine, ROWS, read_fraction=0.4)
        engine.dispose()
    other = db_dir / f"{PREFIX}contacts.db"  # a WA database without messages: not reported
    if not other.exists():
        engine = sa.create_engine(f"sqlite:///{other}")
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE contacts (id INTEGER PRIMARY KEY, wa_id TEXT)"))
        engine.dispose()
    return db_dir


def start_wa_api(db_dir: Path, callback_url: str) -> tuple[subprocess.Popen[str], str]:
    """The WA API stand-in; its GC callbacks go to the exporter, as the WA webhook would."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.wa_standin", "--listen", "127.0.0.1:0",
         "--db-url", f"sqlite:///{db_dir / (PREFIX + 'messagestore.db')}",
         "--callback-url", callback_url,
         "--callback-header", f"Authorization: Bearer {TOKEN}", "--gc-delay", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise SystemExit(f"demo: the simulated WA API did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--web.listen-address", dest="address",
                        default=os.environ.get("DEMO_ADDRESS", ":9864"))
    args = parser.parse_args()

    db_dir = build_world()
    port = args.address.rsplit(":", 1)[1]
    wa_api, wa_url = start_wa_api(db_dir, f"http://127.0.0.1:{port}/webhook/wa-callback")
    env = {**os.environ, "WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(db_dir),
           "WA_DB_NAME_PREFIX": PREFIX, "WA_WEB_URL": wa_url, "WA_WEB_USERNAME": "admin",
           "WA_WEB_PASSWORD": "secret"}
    print(f"""
demo: the simulated WA API listens on {wa_url}
demo: the exporter starts on {args.address}; open
        http://localhost:{port}/metrics
        http://localhost:{port}/
      Fire the webhook as Alertmanager would (message GC on the demo table):
        curl -s -H 'Authorization: Bearer {TOKEN}' -H 'Content-Type: application/json' \\
          -d @demo/alert.json http://localhost:{port}/webhook/alertmanager
      then watch http://localhost:{port}/actions and whatsapp_gc_* in /metrics.
      Ctrl-C stops everything.
""", flush=True)
    exporter = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--web.listen-address", args.address,
         "--config.file", str(ROOT / "demo" / "demo.yml")], env=env, cwd=ROOT)
    try:
        return exporter.wait()
    except KeyboardInterrupt:
        exporter.send_signal(signal.SIGINT)
        return exporter.wait(10)
    finally:
        wa_api.terminate()
        wa_api.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
