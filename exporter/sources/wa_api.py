"""Reaching the WA client's REST API (the webapp): login, health, message and media GC.

One :class:`WaApiClient` per install, shared by the actions and safe to use from several
threads. It logs in with HTTP Basic and keeps the bearer token until shortly before its
``expires_after`` or until a call gets 401 (then it logs in once more and repeats the call
once). Connection errors and 5xx answers are retried with exponential backoff; timeouts and
4xx answers are not, so a GC request the webapp may already have taken is never sent twice.
Each try must be answered in full within ``connect_timeout + read_timeout``. Both are the
session's (:mod:`exporter.sources.wa_http`).
Every failure is a :class:`WaApiError` whose ``kind`` names it; neither the password nor a
token ever appears in an error, a log line or a ``repr``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from exporter.config import Secret, WaApiSettings, scrub
from exporter.errors import SourceError
from exporter.sources.wa_http import deadline, reason, session

log = logging.getLogger(__name__)

LOGIN_PATH = "/v1/users/login"
HEALTH_PATH = "/v1/health"
MESSAGE_GC_PATH = "/v1/services/message/gc"
MEDIA_GC_PATH = "/v1/services/media/gc"
STATS_APP_PATH = "/v1/stats/app"
STATS_DB_PATH = "/v1/stats/db"
APPLICATION_SETTINGS_PATH = "/v1/settings/application"


class WaApiError(SourceError):
    """A WA API call failed. ``status``, ``code``, ``title`` and ``details`` are the HTTP status
    and the WA error body's fields, when there were any."""

    kind = "api"

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 title: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.title, self.details = status, code, title, details

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for action results and the audit log."""
        fields = {"kind": self.kind, "message": str(self), "status": self.status,
                  "code": self.code, "title": self.title, "details": self.details}
        return {k: v for k, v in fields.items() if v is not None}


class WaConnectError(WaApiError):
    """The webapp could not be reached (refused, reset, unresolvable, connect timed out)."""

    kind = "connect"


class WaTlsError(WaConnectError):
    """The TLS handshake failed, usually an unverifiable certificate."""

    kind = "tls"


class WaTimeoutError(WaApiError):
    """The webapp took the request but did not answer within ``wa_api.read_timeout``."""

    kind = "timeout"


class WaAuthError(WaApiError):
    """Login refused, or a fresh token refused too."""

    kind = "auth"


class WaHttpError(WaApiError):
    """A non-2xx answer (other than an auth failure), usually with a WA error body."""

    kind = "http"


class WaResponseError(WaApiError):
    """A 2xx answer that is not what the WA API sends."""

    kind = "response"


@dataclass(frozen=True)
class GcStarted:
    """The answer to a GC call: each node's status. A single-node install answers without
    node ids; its one status is keyed ``None`` (as callbacks without a ``node`` field are)."""

    nodes: dict[str | None, str]

    @property
    def processing(self) -> list[str | None]:
        """The nodes that took the request and will (for message GC) call back."""
        return [node for node, status in self.nodes.items() if status == "processing"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WaApiClient:
    """The webapp's API, as ``settings`` describe it. ``clock`` gives the current UTC time."""

    def __init__(self, settings: WaApiSettings, *,
                 clock: Callable[[], dt.datetime] = _now) -> None:
        self.url = settings.url
        self.username = settings.username
        self._password = settings.password
        self._timeouts = (settings.connect_timeout, settings.read_timeout)
        self._token_margin = dt.timedelta(seconds=settings.token_refresh_margin)
        self._clock = clock
        self._verify: bool | str = str(settings.ca_file) if settings.ca_file else settings.verify
        if not settings.verify and self.url.startswith("https:"):
            log.warning("TLS certificate of the WA API is not verified; set WA_WEB_CA_FILE to "
                        "the webapp's CA instead of WA_WEB_VERIFY=false",
                        extra={"url": self.url})
            # Our warning above says it once; urllib3 would repeat it on every request.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self._session = session(settings.retry_attempts, settings.retry_backoff)
        self._lock = threading.Lock()  # guards the token; held while logging in
        self._token: Secret | None = None
        self._expires: dt.datetime | None = None

    def __repr__(self) -> str:
        return f"WaApiClient(url={self.url!r}, username={self.username!r})"

    def close(self) -> None:
        self._session.close()

    # -- calls ---------------------------------------------------------------------------

    def log_in(self) -> dt.datetime | None:
        """Log in now, whatever token is held: proves the address and the credentials.
        Returns when the new token expires (None if the answer does not say)."""
        with self._lock:
            self._token, self._expires = self._login()
            return self._expires

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: the ``health`` object (per node in multiconnect)."""
        health = self._call("GET", HEALTH_PATH).get("health")
        if not isinstance(health, dict):
            raise WaResponseError(f"GET {HEALTH_PATH}: the answer holds no health object")
        return health

    def message_gc(self) -> GcStarted:
        """``PUT /v1/services/message/gc``: start message GC; completion comes as a callback."""
        return self._gc_started("message", self._call("PUT", MESSAGE_GC_PATH), MESSAGE_GC_PATH)

    def media_gc(self) -> GcStarted:
        """``PUT /v1/services/media/gc``: start media GC (one at a time; 409 while one runs)."""
        return self._gc_started("media", self._call("PUT", MEDIA_GC_PATH), MEDIA_GC_PATH)

    def stats_app(self) -> dict[str, Any]:
        """``GET /v1/stats/app``: the coreapp's in-memory stats, the ``app`` object (keyed by
        node in multiconnect). Cheap: meant for polling."""
        return self._object(STATS_APP_PATH, "stats", "app")

    def stats_db(self) -> dict[str, Any]:
        """``GET /v1/stats/db``: the database stats, the ``db`` object. Meta: it can take long
        and slow the client on a large database; read it only when needed."""
        return self._object(STATS_DB_PATH, "stats", "db")

    def application_settings(self) -> dict[str, Any]:
        """``GET /v1/settings/application``: the ``application`` settings object."""
        return self._object(APPLICATION_SETTINGS_PATH, "settings", "application")

    def _object(self, path: str, outer: str, inner: str) -> dict[str, Any]:
        """``GET path`` and the object at ``{outer: {inner: …}}`` in its answer."""
        container = self._call("GET", path).get(outer)
        found = container.get(inner) if isinstance(container, dict) else None
        if not isinstance(found, dict):
            raise WaResponseError(f"GET {path}: the answer holds no {outer}.{inner} object")
        return found

    @staticmethod
    def _gc_started(service: str, body: dict[str, Any], path: str) -> GcStarted:
        services = body.get("services")
        entry = services.get(service) if isinstance(services, dict) else None
        gc = entry.get("gc") if isinstance(entry, dict) else None
        if isinstance(gc, dict) and isinstance(gc.get("status"), str):
            return GcStarted({None: gc["status"]})
        if isinstance(gc, dict) and gc and all(
                isinstance(v, dict) and isinstance(v.get("status"), str) for v in gc.values()):
            return GcStarted({str(node): v["status"] for node, v in gc.items()})
        raise WaResponseError(f"PUT {path}: the answer holds no {service} GC status")

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, method: str, path: str) -> dict[str, Any]:
        """An authenticated call; one fresh login and one repeat if the token is refused."""
        token = self._current_token()
        response = self._send(method, path, headers=self._bearer(token))
        if response.status_code == 401:
            self._forget(token)
            log.info("WA API token refused, logging in again", extra={"path": path})
            response = self._send(method, path, headers=self._bearer(self._current_token()))
            if response.status_code == 401:
                raise self._error(response, method, path, WaAuthError,
                                  "refused a fresh token")
        return self._json(response, method, path)

    @staticmethod
    def _bearer(token: Secret) -> dict[str, str]:
        return {"Authorization": f"Bearer {token.reveal()}"}

    def _current_token(self) -> Secret:
        with self._lock:
            if self._token is not None and (
                    self._expires is None or self._clock() < self._expires - self._token_margin):
                return self._token
            self._token, self._expires = self._login()
            return self._token

    def _forget(self, token: Secret) -> None:
        with self._lock:
            # Another thread may already have replaced it; that newer token stays.
            if self._token is token:
                self._token = self._expires = None

    def _login(self) -> tuple[Secret, dt.datetime | None]:
        response = self._send("POST", LOGIN_PATH,
                              auth=(self.username, self._password.reveal()))
        if response.status_code == 401:
            raise self._error(response, "POST", LOGIN_PATH, WaAuthError,
                              "login refused; fix: check WA_WEB_USERNAME and WA_WEB_PASSWORD")
        users = self._json(response, "POST", LOGIN_PATH).get("users")
        user = users[0] if isinstance(users, list) and users else None
        token = user.get("token") if isinstance(user, dict) else None
        if not isinstance(token, str) or not token:
            raise WaResponseError(f"POST {LOGIN_PATH}: the answer holds no token")
        expires = _parse_expiry(user.get("expires_after") if isinstance(user, dict) else None)
        log.info("logged in to the WA API", extra={
            "url": self.url, "expires_after": expires.isoformat() if expires else "unknown"})
        return Secret(token), expires

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request, tried as often as the session retries it; every answer is returned."""
        try:
            with deadline(sum(self._timeouts)) as expired:
                return self._session.request(
                    method, self.url + path, timeout=self._timeouts, verify=self._verify,
                    allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            error = WaTimeoutError(
                f"{method} {path}: the answer from {self.url} did not arrive in full "
                f"within {sum(self._timeouts):g}s (wa_api.connect_timeout + read_timeout)"
            ) if expired.is_set() else self._transport_error(exc, method, path)
        raise error

    def _transport_error(self, exc: requests.RequestException, method: str,
                         path: str) -> WaApiError:
        where = f"{method} {path}"
        cause = self._scrub(reason(exc))
        if isinstance(exc, requests.exceptions.SSLError):
            return WaTlsError(f"{where}: TLS to {self.url} failed: {cause}; fix: set "
                              "WA_WEB_CA_FILE to the webapp's CA (or WA_WEB_VERIFY=false)")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return WaConnectError(f"{where}: connecting to {self.url} timed out after "
                                  f"{self._timeouts[0]:g}s")
        if isinstance(exc, requests.exceptions.Timeout) or _body_timed_out(exc):
            return WaTimeoutError(f"{where}: no answer from {self.url} within "
                                  f"{self._timeouts[1]:g}s")
        return WaConnectError(f"{where}: cannot reach {self.url}: {cause}")

    def _error(self, response: requests.Response, method: str, path: str,
               error_type: type[WaApiError], problem: str | None = None) -> WaApiError:
        """A typed error from a non-2xx answer, with the WA error body's first error."""
        code = title = details = None
        try:
            errors = response.json().get("errors")
        except (ValueError, AttributeError):
            errors = None
        first = errors[0] if isinstance(errors, list) and errors else None
        if isinstance(first, dict):
            code = first.get("code") if isinstance(first.get("code"), int) else None
            title = self._scrub(str(first.get("title") or "")) or None
            details = self._scrub(" ".join(str(first.get("details") or "").split())[:300]) or None
        text = f"{method} {path}: HTTP {response.status_code}"
        if code is not None or title:
            text += f", WA error {code if code is not None else '?'} {title or ''}".rstrip()
        if details:
            text += f": {details}"
        if problem:
            text += f"; {problem}"
        return error_type(text, status=response.status_code, code=code, title=title,
                          details=details)

    def _json(self, response: requests.Response, method: str, path: str) -> dict[str, Any]:
        if not 200 <= response.status_code < 300:
            raise self._error(response, method, path, WaHttpError)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise WaResponseError(f"{method} {path}: HTTP {response.status_code} answer is not "
                                  "a JSON object", status=response.status_code)
        return body

    def _scrub(self, text: str) -> str:
        return scrub(text, self._password, self._token)


def _parse_expiry(value: object) -> dt.datetime | None:
    """``2026-12-03 14:00:00+00:00`` -> an aware datetime; anything else -> None (then the
    token is kept until a 401)."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _body_timed_out(exc: requests.RequestException) -> bool:
    """requests reports a read timeout after the headers as a ConnectionError."""
    return bool(exc.args) and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError)
