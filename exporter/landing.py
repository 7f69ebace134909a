"""The landing page at ``/``: what this is, where things are, how each collector is doing,
and what the actions did lately. Plain HTML with inline styles, no external assets."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from exporter import __version__

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:60rem;padding:0 1rem;color:#1c2430;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
.sub{color:#5a6472;margin-top:0}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e7ec;vertical-align:top}
th{font-weight:600;color:#3a4350;background:#f5f7f9}code{font-size:.9em}
.ok{color:#0a7a32;font-weight:600}.bad{color:#b3261e;font-weight:600}
.muted{color:#6b7480}ul.links{padding-left:1.2rem}
"""

ENDPOINTS = (
    ("/metrics", "the metrics, for Prometheus"),
    ("/-/healthy", "200 while the process runs"),
    ("/-/ready", "200 once every collector has refreshed once"),
    ("/runbooks", "what each alert means and what to do"),
)
ACTION_ENDPOINTS = (
    ("/actions", "recent decisions and results of the actions, as JSON"),
)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(collectors: Iterable[Mapping[str, Any]], records: list[dict[str, Any]] | None,
           telemetry_path: str = "/metrics") -> str:
    now = time.time()
    endpoints = [(telemetry_path if p == "/metrics" else p, t) for p, t in ENDPOINTS]
    if records is not None:
        endpoints += list(ACTION_ENDPOINTS)
    links = "".join(f'<li><a href="{escape(p)}"><code>{escape(p)}</code></a> — {escape(t)}</li>'
                    for p, t in endpoints)
    rows = []
    for c in collectors:
        state = ('<span class="ok">ok</span>' if c["success"] else
                 '<span class="bad">failing</span>' if c["finished"] else
                 '<span class="muted">starting</span>')
        last = _age(now - c["last_success"]) if c["last_success"] else "never"
        last_error = escape(c["error"]) if c["error"] else '<span class="muted">—</span>'
        rows.append(f"<tr><td><code>{escape(c['name'])}</code></td><td>{state}</td>"
                    f"<td>{last}</td><td>{c['duration'] * 1000:.0f} ms</td>"
                    f"<td>every {c['interval']:g} s</td><td>{last_error}</td></tr>")
    collectors_html = ("<table><tr><th>collector</th><th>state</th><th>last success</th>"
                       "<th>took</th><th>interval</th><th>last error</th></tr>"
                       + "".join(rows) + "</table>") if rows else \
        '<p class="muted">No collector is enabled.</p>'
    if records is None:
        actions_html = ('<p class="muted">Actions are off (<code>actions.allowed</code> is '
                        'empty).</p>')
    elif not records:
        actions_html = '<p class="muted">No action has been requested yet.</p>'
    else:
        lines = []
        for r in reversed(records[-15:]):
            what = r.get("outcome") or r.get("result") or ""
            cls = "bad" if what in ("failed", "error", "timeout", "rejected", "interrupted") \
                else "ok" if what in ("started", "success") else "muted"
            failure: Any = r.get("error")
            if isinstance(failure, dict):
                failure = failure.get("message") or failure.get("title")
            detail = r.get("reason") or failure or ", ".join(t for t in r.get("targets", []) if t)
            lines.append(f"<tr><td>{_when(float(r.get('ts', 0)))}</td>"
                         f"<td>{escape(str(r.get('event', '')))}</td>"
                         f"<td><code>{escape(str(r.get('action', '')))}</code></td>"
                         f"<td>{escape(str(r.get('trigger', '')))}</td>"
                         f'<td><span class="{cls}">{escape(str(what))}</span></td>'
                         f"<td>{escape(str(detail))[:160]}</td></tr>")
        actions_html = ("<table><tr><th>time</th><th>event</th><th>action</th><th>trigger</th>"
                        "<th>outcome</th><th>detail</th></tr>" + "".join(lines) + "</table>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>wa-exporter</title><style>{STYLE}</style></head><body>"
            f"<h1>wa-exporter <span class='muted'>{escape(__version__)}</span></h1>"
            f"<p class='sub'>Prometheus exporter and alert-driven remediation for the WhatsApp "
            f"Business API on-premises client: the messages table, logs and archives, the "
            f"media volume, message GC and cleanup.</p>"
            f"<h2>Endpoints</h2><ul class='links'>{links}</ul>"
            f"<h2>Collectors</h2>{collectors_html}"
            f"<h2>Recent actions</h2>{actions_html}"
            f"<p class='muted'>Page generated {_when(now)}.</p></body></html>")
