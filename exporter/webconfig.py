"""``--web.config.file``: TLS, client certificates and basic auth, in the format of the
Prometheus exporter-toolkit (``web-config.yml``), so operators reuse what they know.

Supported: ``tls_server_config`` (``cert_file``, ``key_file``, ``client_auth_type``,
``client_ca_file``, ``min_version``, ``max_version``), ``basic_auth_users`` (bcrypt
hashes) and ``http_server_config.headers``. Keys of the format that have no meaning here
(``cipher_suites``, ``curve_preferences``, ``prefer_server_cipher_suites``, ``http2``)
are accepted and ignored with a warning, so one file can serve several exporters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
import ssl
import threading
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from exporter.config.base import StrictModel
from exporter.config.errors import ConfigError, describe_validation_errors, fix_hint
from exporter.config.files import load_yaml

log = logging.getLogger(__name__)

ClientAuth = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                     "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_IGNORED = ("cipher_suites", "curve_preferences", "prefer_server_cipher_suites")
# A bcrypt hash as htpasswd and Go's bcrypt write it: variant, cost, 22 characters of salt and
# 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
MAX_REMEMBERED = 1000  # bcrypt results kept, successes and refusals each


class TlsServerConfig(StrictModel):
    cert_file: Annotated[Path, fix_hint("point cert_file at the server certificate (PEM)")]
    key_file: Annotated[Path, fix_hint("point key_file at the certificate's private key (PEM)")]
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Annotated[Path | None, fix_hint("point client_ca_file at the CA (PEM) "
                                                    "that signs client certificates")] = None
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: list[str] | None = None
    curve_preferences: list[str] | None = None
    prefer_server_cipher_suites: bool | None = None


class HttpServerConfig(StrictModel):
    http2: bool | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class WebConfig(StrictModel):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[str, str] = Field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """The web config in ``path``; one :class:`ConfigError` with a line for every problem."""
    data = load_yaml(path, "--web.config.file") or {}
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(*(f"--web.config.file: {line}"
                            for line in describe_validation_errors(exc, WebConfig))) from None
    problems = [f"--web.config.file: basic_auth_users.{user}: not a bcrypt hash; fix: use "
                "e.g. htpasswd -nBC 10 '' | tr -d ':\\n'"
                for user, hashed in config.basic_auth_users.items()
                if not _BCRYPT.fullmatch(hashed)]
    tls = config.tls_server_config
    if tls is not None:
        ignored = [k for k in _IGNORED if getattr(tls, k) is not None]
        if ignored:
            log.warning("web config keys ignored", extra={"keys": ",".join(ignored)})
        if tls.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") \
                and tls.client_ca_file is None:
            problems.append("--web.config.file: tls_server_config.client_ca_file: not set "
                            f"but client_auth_type is {tls.client_auth_type}; fix: set "
                            "client_ca_file to the CA that signs client certificates")
    if problems:
        raise ConfigError(*problems)
    server_context(config)  # fail now, with the reason, on unreadable or wrong files
    return config


def server_context(config: WebConfig) -> ssl.SSLContext | None:
    tls = config.tls_server_config
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.maximum_version = _VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file is not None:
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--web.config.file: tls_server_config: cannot load the certificate, "
                          f"key or CA: {getattr(exc, 'strerror', None) or exc}; fix: check "
                          "cert_file, key_file and client_ca_file") from None
    # Go's RequireAnyClientCert accepts any certificate; Python can only ask for verified ones.
    context.verify_mode = {
        "NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}[tls.client_auth_type]
    return context


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, as exporter-toolkit does: an
    unknown user is compared with a dummy hash of the same cost, so the time of the answer
    does not tell whether the user exists; a password over bcrypt's 72 bytes is refused
    after the same work; each result is remembered (the last MAX_REMEMBERED successes and
    as many refusals), since one bcrypt check costs tens of milliseconds."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self._accepted: dict[bytes, None] = {}
        self._refused: dict[bytes, None] = {}
        self._lock = threading.Lock()
        self._dummy: bytes | None = None  # made on first need: it costs one bcrypt hash

    def __bool__(self) -> bool:
        return bool(self.users)

    def _parse(self, header: str) -> tuple[str, str, bytes] | None:
        """(user, password, cache key), or None if the header names no user at all."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, ValueError):
            return None
        if not sep:
            return None
        hashed = self.users.get(user, "")  # "": the dummy's key, the same for every stranger
        return user, password, hashlib.sha256(f"{user}\0{password}\0{hashed}".encode()).digest()

    def cached(self, header: str) -> bool | None:
        """Without bcrypt: True for a remembered success, False for a remembered refusal or
        a header that names no user, None when only bcrypt can tell."""
        parsed = self._parse(header)
        return False if parsed is None else self._remembered(parsed[2])

    def _remembered(self, key: bytes) -> bool | None:
        with self._lock:
            if key in self._accepted:
                return True
            return False if key in self._refused else None

    def check(self, header: str) -> bool:
        parsed = self._parse(header)
        if parsed is None:
            return False
        user, password, key = parsed
        known = self._remembered(key)
        if known is not None:
            return known
        import bcrypt  # loaded with the first password to check: 0.4 MiB less without users

        hashed = self.users[user].encode() if user in self.users else self._dummy_hash()
        given = password.encode()
        # bcrypt reads 72 bytes at most and refuses more: a longer password is wrong, after
        # the same work as any other.
        right = bcrypt.checkpw(given[:72], hashed) and len(given) <= 72 and user in self.users
        with self._lock:
            remembered = self._accepted if right else self._refused
            if len(remembered) >= MAX_REMEMBERED:
                del remembered[next(iter(remembered))]  # the oldest
            remembered[key] = None
        return right

    def _dummy_hash(self) -> bytes:
        """A hash of a random password at the highest cost among the users' hashes."""
        if self._dummy is None:
            import bcrypt

            costs = [int(match.group(1)) for hashed in self.users.values()
                     if (match := _BCRYPT.fullmatch(hashed))]
            salt = bcrypt.gensalt(rounds=max(costs, default=10))
            self._dummy = bcrypt.hashpw(secrets.token_urlsafe(16).encode(), salt)
        return self._dummy
