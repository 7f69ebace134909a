"""The client's own view in the stand-in: ``GET /v1/stats/app``, ``GET /v1/stats/db`` and
``GET /v1/settings/application``, answering Meta's documented JSON, single instance or
multiconnect. Mixed into :class:`~tests.wa_standin.server.StandIn`; calls are counted in its
``requests`` stats like every endpoint's, and its fault modes apply to them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading

    from .server import _Handler

Json = dict[str, Any]

CLIENT_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/v1/stats/app"): "stats_app",
    ("GET", "/v1/stats/db"): "stats_db",
    ("GET", "/v1/settings/application"): "settings_application",
}
CLIENT_ADMIN_ACTIONS = frozenset({"set_client_stat", "set_application_settings"})
# Multiconnect: /v1/stats/db is answered by the primary master only, the others give {}.
MASTERS = ("wamaster1", "wamaster2")


def _family(help_text: str, kind: str, *data: tuple[Mapping[str, str], float]) -> Json:
    return {"data": [{"labels": dict(labels), "value": value} if labels else {"value": value}
                     for labels, value in data],
            "help": help_text, "type": kind}


def documented_app() -> Json:
    """Meta's example answer of /v1/stats/app (single instance), the families it shows."""
    inbound, status = {"result": "success", "type": "inbound_message"}, \
        {"result": "1", "type": "status_change"}
    commit = {"db": "messageStore", "request": "commit"}
    return {
        "callback_queue_size": _family("Current callback queue size", "gauge", ({}, 450)),
        "callback_requests_duration_ms_count": _family(
            "Total number of callback requests", "counter", (inbound, 2), (status, 28)),
        "callback_requests_duration_ms_sum": _family(
            "Total duration(ms) of callback requests", "counter", (inbound, 32), (status, 451)),
        "db_request_duration_us_count": _family(
            "Total number of db requests", "counter", (commit, 5)),
        "db_request_duration_us_sum": _family(
            "Total duration(us) of db requests", "counter", (commit, 1250)),
    }


def documented_db() -> Json:
    """Meta's example answer of /v1/stats/db: contacts, receipts, messages by type, and what
    is pending (7 callbacks, 3 messages)."""
    return {
        "db_contacts": _family("Current number of contacts in DB", "gauge",
                               ({"type": "non_whatsapp_user"}, 2),
                               ({"type": "whatsapp_user"}, 5)),
        "db_message_receipts": _family("Current number of message receipts in DB", "gauge",
                                       ({}, 6)),
        "db_messages": _family("Current number of messages in DB", "gauge",
                               ({"type": "undefined"}, 2), ({"type": "system"}, 1),
                               ({"type": "text"}, 3)),
        "db_pending_callbacks": _family("Current number of pending callbacks in DB", "gauge",
                                        ({}, 7)),
        "db_pending_messages": _family("Current number of pending messages in DB", "gauge",
                                       ({}, 3)),
    }


def documented_application() -> Json:
    """Meta's example of /v1/settings/application."""
    return {
        "callback_backoff_delay_ms": 3000, "callback_persist": True,
        "garbagecollector_enable": {"media": False, "messages": True},
        "heartbeat_interval": 5, "max_callback_backoff_delay_ms": 900000,
        "media": {"auto_download": ["image", "video", "voice", "sticker", "audio", "document"]},
        "notify_user_change_number": True, "show_security_notifications": True,
        "unhealthy_interval": 30, "wa_id": "16315551019",
        "webhooks": {"url": "https://callbacks.example/wa", "max_concurrent_requests": 12},
        "verbose_logging": False, "log_level": "info",
    }


class ClientStatsEndpoints:
    """The three endpoints and their admin calls; the state is per stand-in."""

    node_ids: list[str]
    _cond: threading.Condition
    _meta: Json

    def _client_state(self) -> Json:
        """Created at first use: per endpoint, per node (None on a single instance)."""
        state: Json | None = self.__dict__.get("_client_stats")
        if state is None:
            from .server import node_id

            app_nodes: list[str | None] = [*self.node_ids] or [None]
            db_nodes: list[str | None] = [node_id(m) for m in MASTERS] if self.node_ids \
                else [None]
            state = {"app": {n: documented_app() for n in app_nodes},
                     "db": {n: documented_db() if i == 0 else {}
                            for i, n in enumerate(db_nodes)},
                     "application": documented_application()}
            self.__dict__["_client_stats"] = state
        return state

    def set_client_stat(self, endpoint: str, family: str, value: float,
                        labels: Mapping[str, str] | None = None, node: str | None = None,
                        kind: str = "gauge", help: str = "") -> None:
        """Set one sample of ``family`` (``app`` or ``db`` endpoint) on ``node`` (default:
        every node that reports the endpoint), adding the sample or family if new."""
        if endpoint not in ("app", "db"):
            raise ValueError("endpoint must be app or db")
        with self._cond:
            nodes = self._client_state()[endpoint]
            if node is not None and node not in nodes:
                raise ValueError(f"unknown node {node!r}; use one of {sorted(map(str, nodes))}")
            for name, families in nodes.items():
                if (node is not None and name != node) or (endpoint == "db" and not families):
                    continue
                entry = families.setdefault(family, {"data": [], "help": help, "type": kind})
                wanted = dict(labels or {})
                points = entry["data"]
                point = next((p for p in points if p.get("labels", {}) == wanted), None)
                if point is None:
                    points.append({"labels": wanted, "value": value} if wanted
                                  else {"value": value})
                else:
                    point["value"] = value

    def set_application_settings(self, **changes: Any) -> None:
        """Change top-level keys of /v1/settings/application (e.g.
        ``garbagecollector_enable={"media": false, "messages": false}``)."""
        with self._cond:
            self._client_state()["application"].update(changes)

    def client_handlers(self) -> dict[str, Callable[[_Handler], None]]:
        return {"stats_app": lambda h: self._answer_stats(h, "app"),
                "stats_db": lambda h: self._answer_stats(h, "db"),
                "settings_application": self._answer_application}

    def _answer_stats(self, h: _Handler, endpoint: str) -> None:
        with self._cond:
            nodes = copy.deepcopy(self._client_state()[endpoint])
        body = nodes.get(None, nodes)
        h.reply(200, {"stats": {endpoint: body}, "meta": self._meta})

    def _answer_application(self, h: _Handler) -> None:
        with self._cond:
            application = copy.deepcopy(self._client_state()["application"])
        h.reply(200, {"settings": {"application": application}, "meta": self._meta})
