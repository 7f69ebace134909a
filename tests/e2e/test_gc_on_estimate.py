"""The GC loop closed by an engine estimate: PostgreSQL with autovacuum off for the table,
the row figure above the exact bound, the real exporter, Prometheus and Alertmanager, and
the WA API stand-in deleting rows. Nobody runs ANALYZE after the table was filled: neither
the stand-in's GC nor the exporter nor this test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_full_loop import BOUND, TOKEN, _audit, loop_stack
from tests.promstack import alerts, query, wait_until
from tests.support import (
    ONLY_MESSAGES,
    DatabaseServer,
    big_table_without_autovacuum,
    new_prefix,
)

pytestmark = [pytest.mark.postgres]


def test_the_large_table_alert_resolves_after_gc_on_a_postgres_estimate(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    database = prefix + "main"
    # 900 rows, 60 % read: large (BOUND 500), and under it once GC deleted the read ones.
    big_table_without_autovacuum(postgres, database, 900, read_fraction=0.6)
    state = tmp_path / "state"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = f"""
collectors:
  messages: {{interval: 1s, timeout: 5s, query_timeout: 5s, exact_count_below: 50}}
{ONLY_MESSAGES}actions:
  allowed: [gc]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {state}
  cooldown: {{gc: 10s}}
  schedules: []
  gc: {{callback_timeout: 10s, settle_interval: 1s, round_timeout: 30s}}
webhook:
  bearer_token_file: {token_file}
"""
    with loop_stack(postgres, prefix, config, token_file, tmp_path) as prom:
        wait_until("WhatsAppMessagesTableLarge fires",
                   lambda: alerts(prom, "WhatsAppMessagesTableLarge"), timeout=60)
        assert query(prom, f'whatsapp_messages_table_rows_source{{database="{database}",'
                     'source="n_live_tup"}')
        finished = wait_until("GC finishes after the webhook", lambda: [
            r for r in _audit(state) if r["event"] == "finished" and r["action"] == "gc"],
            timeout=60)
        assert finished[0]["result"] == "success", finished
        assert finished[0]["rows_after"] < BOUND
        wait_until("WhatsAppMessagesTableLarge resolves", lambda: not alerts(
            prom, "WhatsAppMessagesTableLarge") and not alerts(
            prom, "WhatsAppMessagesTableLarge", "pending"), timeout=60)
        # Resolved by the estimate itself, not by a switch to an exact count.
        assert query(prom, f'whatsapp_messages_table_rows_source{{database="{database}",'
                     'source="n_live_tup"}')
