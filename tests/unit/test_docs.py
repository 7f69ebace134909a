"""The README's metric tables, as rendered, list what the code exports: no more, no fewer."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from tests.support import ROOT, exported_metrics

SPEC_CONTRACT = {  # SPEC.md section 3: names other tools rely on
    "whatsapp_db_up", "whatsapp_messages_table_rows", "whatsapp_messages_table_rows_exact",
    "whatsapp_messages_table_size_bytes", "whatsapp_log_file_size_bytes",
    "whatsapp_log_archive_files", "whatsapp_log_archive_size_bytes",
    "whatsapp_log_archive_oldest_timestamp_seconds", "whatsapp_media_volume_size_bytes",
    "whatsapp_media_volume_avail_bytes", "whatsapp_media_volume_free_bytes",
    "whatsapp_media_volume_files", "whatsapp_media_volume_files_free",
    "whatsapp_media_volume_used_bytes", "whatsapp_media_volume_stored_files",
    "whatsapp_container_up", "whatsapp_gc_runs_total", "whatsapp_gc_messages_deleted_total",
    "whatsapp_gc_last_run_timestamp_seconds", "whatsapp_gc_last_success_timestamp_seconds",
    "whatsapp_gc_duration_seconds", "whatsapp_cleanup_runs_total",
    "whatsapp_cleanup_last_run_timestamp_seconds",
    "whatsapp_cleanup_last_success_timestamp_seconds", "whatsapp_action_requests_total",
    "whatsapp_exporter_collector_success", "whatsapp_exporter_collector_duration_seconds",
    "whatsapp_exporter_collector_last_success_timestamp_seconds",
    "whatsapp_exporter_build_info",
}


def readme_metrics() -> set[str]:
    """Metric names in the first cell of a table row of the README as a CommonMark + tables
    renderer shows it (GitHub's dialect): a blank line inside a table ends it, and the rows
    after it render as raw pipes, so a name there does not count."""
    tokens = MarkdownIt("commonmark").enable("table").parse(
        (ROOT / "README.md").read_text(encoding="utf-8"))
    names: set[str] = set()
    for i, token in enumerate(tokens):
        if token.type == "tr_open" and tokens[i + 1].type == "td_open":
            cell = tokens[i + 2]  # the inline content of the row's first cell
            names.update(re.findall(r"`(whatsapp_[a-z0-9_]+)`", cell.content))
    return names


def test_readme_lists_exactly_the_exported_metrics() -> None:
    exported = set(exported_metrics())
    documented = readme_metrics()
    assert documented - exported == set(), "in the README but not exported"
    assert exported - documented == set(), "exported but not in the README"


def test_the_spec_contract_is_exported() -> None:
    assert SPEC_CONTRACT - set(exported_metrics()) == set()


def test_no_gauge_or_counter_takes_a_histogram_suffix() -> None:
    """promtool's lint rejects ``_count``, ``_sum`` and ``_bucket`` on anything but a
    histogram or summary (which is why the media scan's figure is ``_stored_files``)."""
    clashing = {name for name, kind in exported_metrics().items()
                if kind not in ("histogram", "summary")
                and name.endswith(("_count", "_sum", "_bucket"))}
    assert clashing == set()
