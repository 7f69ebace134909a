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
import ssl
import threading
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError

from exporter.config.errors import ConfigError, describe_validation_error, fix_hint
from exporter.config.models import StrictModel

log = logging.getLogger(__name__)

ClientAuth = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                     "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_IGNORED = ("cipher_suites", "curve_preferences", "prefer_server_cipher_suites")


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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"--web.config.file: cannot read {str(path)!r}: "
                          f"{exc.strerror or exc}; fix: point it at a readable file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--web.config.file: {path} is not UTF-8 text (byte {exc.start}); "
                          "fix: save it as UTF-8") from None
    except yaml.YAMLError:
        raise ConfigError(f"--web.config.file: {path} is not valid YAML; fix: correct the "
                          "syntax") from None
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            "--web.config.file: " + describe_validation_error(exc, WebConfig)) from None
    for user, hashed in config.basic_auth_users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"--web.config.file: basic_auth_users.{user}: not a bcrypt hash; "
                              "fix: use e.g. htpasswd -nBC 10 '' | tr -d ':\\n'")
    tls = config.tls_server_config
    if tls is not None:
        ignored = [k for k in _IGNORED if getattr(tls, k) is not None]
        if ignored:
            log.warning("web config keys ignored", extra={"keys": ",".join(ignored)})
        if tls.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") \
                and tls.client_ca_file is None:
            raise ConfigError("--web.config.file: tls_server_config.client_ca_file: not set "
                              f"but client_auth_type is {tls.client_auth_type}; fix: set "
                              "client_ca_file to the CA that signs client certificates")
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
    """Checks ``Authorization: Basic`` against bcrypt hashes; remembers recent successes,
    since one bcrypt check costs tens of milliseconds."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self._ok: dict[bytes, None] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.users)

    def _parse(self, header: str) -> tuple[str, str, bytes] | None:
        """(user, password, cache key), or None if the header cannot name a known user."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, ValueError):
            return None
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return None
        return user, password, hashlib.sha256(f"{user}\0{password}\0{hashed}".encode()).digest()

    def cached(self, header: str) -> bool | None:
        """Without bcrypt: True for a recent success, False when the header cannot be right
        (none, garbled, unknown user), None when only bcrypt can tell."""
        parsed = self._parse(header)
        if parsed is None:
            return False
        with self._lock:
            return True if parsed[2] in self._ok else None

    def check(self, header: str) -> bool:
        parsed = self._parse(header)
        if parsed is None:
            return False
        user, password, key = parsed
        with self._lock:
            if key in self._ok:
                return True
        import bcrypt  # loaded with the first password to check: 0.4 MiB less without users

        if not bcrypt.checkpw(password.encode(), self.users[user].encode()):
            return False
        with self._lock:
            if len(self._ok) > 1000:
                self._ok.clear()
            self._ok[key] = None
        return True
