"""The PromQL behind the Grafana dashboards, with Grafana's variables filled in, so tests can
parse it (promtool) and evaluate it against a real Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"

# What Grafana would send for "All" exporters and a short time range.
DEFAULT_VARIABLES: dict[str, str] = {
    "datasource": "prometheus",
    "instance": ".*",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}

# $name, ${name} and ${name:format}; Grafana's legacy [[name]] is not used in our dashboards.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load_dashboard(name: str = "wa-exporter-overview.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Replace every Grafana variable in ``text``; an unknown one is an error, never left in."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for the dashboard variable ${name} in {text!r}")
        return variables[name]

    return _VARIABLE.sub(value, text)


def dashboard_queries(dashboard_json: Mapping[str, Any],
                      variables: Mapping[str, str] | None = None) -> list[str]:
    """Every panel target's PromQL, in panel order, with the variables substituted
    (``variables`` overrides :data:`DEFAULT_VARIABLES`)."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    return [substitute(target["expr"], values)
            for panel in panels(dashboard_json)
            for target in panel.get("targets", [])
            if target.get("expr")]
