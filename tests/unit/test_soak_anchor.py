"""The soak's memory goal is anchored on query-exporter measured in the same run, and the
soak reads query-exporter's answer (the text format) as well as ours (OpenMetrics)."""

from __future__ import annotations

from bench.soak import ProcSample, anchor_missed, parse_metrics, rss_figures


def _samples(*rss_mb: float, hwm_mb: float | None = None) -> list[ProcSample]:
    kb = [int(x * 1024) for x in rss_mb]
    return [ProcSample(t=10.0 * i, rss_kb=v, rss_anon_kb=v // 2,
                       hwm_kb=int((hwm_mb or max(rss_mb)) * 1024), fds=10, threads=5,
                       children=0, zombies=0, children_cpu_s=0.0, fd_kinds={},
                       thread_states={}) for i, v in enumerate(kb)]


def test_peak_at_or_below_query_exporters_meets_the_goal() -> None:
    ours = rss_figures(_samples(60.0, 61.0, 61.5))
    reference = rss_figures(_samples(66.0, 66.5, 66.5))
    assert anchor_missed(ours, reference, reference_to_end=True) is None
    assert anchor_missed(reference, reference, reference_to_end=True) is None


def test_peak_above_query_exporters_misses_the_goal_naming_both() -> None:
    ours = rss_figures(_samples(66.0, 66.9, hwm_mb=67.2))
    reference = rss_figures(_samples(66.5, 66.5))
    missed = anchor_missed(ours, reference, reference_to_end=True)
    assert missed is not None
    assert "67.2 MiB" in missed and "66.5 MiB" in missed


def test_no_anchor_to_the_end_is_a_missed_goal_not_a_pass() -> None:
    ours = rss_figures(_samples(40.0, 40.0))
    assert anchor_missed(ours, rss_figures([]), reference_to_end=False) is not None
    reference = rss_figures(_samples(66.5))
    assert anchor_missed(ours, reference, reference_to_end=False) is not None


def test_query_exporters_text_format_and_our_openmetrics_both_parse() -> None:
    text = ('# HELP messages_table_rows Rows in messages (COUNT(*))\n'
            '# TYPE messages_table_rows gauge\n'
            'messages_table_rows{database="wa"} 1.0e+07\n')
    samples = parse_metrics(text, "text/plain; version=0.0.4; charset=utf-8")
    assert samples[("messages_table_rows", (("database", "wa"),))] == 10_000_000
    openmetrics = text.replace("1.0e+07", "42") + "# EOF\n"
    samples = parse_metrics(openmetrics, "application/openmetrics-text; version=1.0.0")
    assert samples[("messages_table_rows", (("database", "wa"),))] == 42
