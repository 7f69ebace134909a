"""A maintenance silence through Alertmanager's API v2, for the WA alerts of one exporter
instance during an upgrade: ``POST /api/v2/silences`` and ``DELETE /api/v2/silence/{id}``.

The silence matches ``alertname=~"<alerts>"`` (default every ``WhatsApp…`` alert of our
rules) and ``instance="<instance>"``: the label Prometheus gives the series it scrapes from
this exporter, by default the scrape target's ``host:port``. The exporter cannot see how
Prometheus addresses it, so the default — this host's name and the listen port — is only a
guess, printed with the silence; pass the target as Prometheus has it where they differ.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from exporter import __version__
from exporter.config import ConfigError, Secret, read_secret, scrub

DEFAULT_ALERTS = "WhatsApp.+"
TIMEOUT_SECONDS = 10.0


class SilenceError(Exception):
    """Alertmanager could not be reached or refused; the message never holds a secret."""


def default_instance(listen_address: str) -> str:
    """``<this host>:<listen port>``: Prometheus's ``instance`` for a target written so."""
    port = listen_address.rpartition(":")[2] or "9864"
    return f"{socket.gethostname()}:{port}"


@dataclass(frozen=True)
class Silence:
    id: str
    starts_at: str
    ends_at: str
    matchers: list[dict[str, Any]]

    def describe(self) -> str:
        shown = ", ".join(f'{m["name"]}{"=~" if m["isRegex"] else "="}"{m["value"]}"'
                          for m in self.matchers)
        return f"silence {self.id} until {self.ends_at} for {{{shown}}}"


class Alertmanager:
    """One Alertmanager, with basic auth or a bearer token (read from files) and a CA."""

    def __init__(self, url: str, *, username: str | None = None,
                 password_file: Path | None = None, bearer_token_file: Path | None = None,
                 ca_file: Path | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--alertmanager.url={url!r}: is not an http(s) URL; fix: e.g. "
                              "http://alertmanager:9093")
        if parts.username or parts.password:
            raise ConfigError("--alertmanager.url: holds credentials; fix: use "
                              "--alertmanager.basic-auth.username and .password-file")
        if (username is None) != (password_file is None):
            raise ConfigError("--alertmanager.basic-auth.username and "
                              "--alertmanager.basic-auth.password-file go together; fix: "
                              "give both or neither")
        if username is not None and bearer_token_file is not None:
            raise ConfigError("basic auth and a bearer token for Alertmanager; fix: give one")
        self.url = url.rstrip("/")
        self._password: Secret | None = None if password_file is None else read_secret(
            password_file, "--alertmanager.basic-auth.password-file")
        self._token: Secret | None = None if bearer_token_file is None else read_secret(
            bearer_token_file, "--alertmanager.bearer-token-file")
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"wa-exporter/{__version__}"
        if username is not None and self._password is not None:
            self._session.auth = (username, self._password.reveal())
        if self._token is not None:
            self._session.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        if ca_file is not None:
            self._session.verify = str(ca_file)

    def silence(self, duration: float, instance: str, alerts: str = DEFAULT_ALERTS,
                comment: str = "WA client upgrade") -> Silence:
        now = dt.datetime.now(dt.UTC)
        matchers: list[dict[str, Any]] = [
            {"name": "alertname", "value": alerts, "isRegex": True, "isEqual": True},
            {"name": "instance", "value": instance, "isRegex": False, "isEqual": True},
        ]
        starts, ends = _rfc3339(now), _rfc3339(now + dt.timedelta(seconds=duration))
        body = {
            "matchers": matchers, "startsAt": starts, "endsAt": ends,
            "createdBy": f"wa-exporter upgrade-check ({socket.gethostname()})",
            "comment": comment,
        }
        answer = self._call("POST", "/api/v2/silences", json=body)
        silence_id = answer.get("silenceID") if isinstance(answer, dict) else None
        if not isinstance(silence_id, str) or not silence_id:
            raise SilenceError(f"Alertmanager at {self.url} answered without a silenceID")
        return Silence(silence_id, starts, ends, matchers)

    def unsilence(self, silence_id: str) -> None:
        self._call("DELETE", f"/api/v2/silence/{quote(silence_id, safe='')}")

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        where = f"Alertmanager at {self.url}"
        try:
            response = self._session.request(method, self.url + path, timeout=TIMEOUT_SECONDS,
                                             **kwargs)
        except requests.RequestException as exc:
            text = " ".join(str(exc).split())[:200]
            raise SilenceError(f"{where} unreachable: {self._scrub(text)}") from None
        if response.status_code in (401, 403):
            raise SilenceError(f"{where} refused the credentials (HTTP "
                               f"{response.status_code}); fix: check the basic auth or "
                               "bearer token options")
        if not response.ok:
            text = " ".join(response.text.split())[:200]
            raise SilenceError(f"{where} answered HTTP {response.status_code} to {method} "
                               f"{path}: {self._scrub(text)}")
        try:
            return response.json() if response.content else None
        except ValueError:
            return None

    def _scrub(self, text: str) -> str:
        return scrub(text, self._password, self._token)


def _rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
