"""The web side's public behaviour, whatever serves it: loading ``--web.config.file``
(exporter-toolkit format), checking basic auth against its bcrypt hashes, and parsing
``--web.listen-address``."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import bcrypt
import pytest

from exporter import webconfig
from exporter.config import ConfigError
from exporter.server import parse_listen_address
from exporter.webconfig import BasicAuth, load_web_config
from tests.wa_standin.certs import make_self_signed_cert

# Four rounds: the cheapest cost bcrypt allows, so the suite stays fast; the check is the same.
HASH = bcrypt.hashpw(b"s3cret pass", bcrypt.gensalt(rounds=4)).decode()


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_basic_auth_users_and_headers(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n"
                                             "http_server_config:\n  headers:\n"
                                             "    X-Frame-Options: deny\n"))
    assert config.basic_auth_users == {"prometheus": HASH}
    assert config.http_server_config.headers == {"X-Frame-Options": "deny"}
    assert config.tls_server_config is None


def test_an_empty_file_means_no_tls_and_no_auth(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, ""))
    assert config.basic_auth_users == {} and config.tls_server_config is None


def test_loads_tls_with_a_readable_certificate(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    config = load_web_config(write(tmp_path, f"tls_server_config:\n  cert_file: {cert}\n"
                                             f"  key_file: {key}\n  min_version: TLS13\n"))
    assert config.tls_server_config is not None
    assert config.tls_server_config.cert_file == cert
    assert config.tls_server_config.min_version == "TLS13"


@pytest.mark.parametrize(("text", "named"), [
    ("basic_auth_user:\n  a: b\n", "basic_auth_user: unknown key"),  # a typo
    ("basic_auth_users:\n  prometheus: plain-text\n", "basic_auth_users.prometheus: not a bcrypt"),
    ("basic_auth_users:\n  prometheus: $2y$10$cut-short\n",
     "basic_auth_users.prometheus: not a bcrypt"),
    ("basic_auth_users: [\n", "not valid YAML"),
    ("tls_server_config:\n  cert_file: /nonexistent/cert.pem\n"
     "  key_file: /nonexistent/key.pem\n", "cannot load the certificate"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n"
     "  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file: not set"),
])
def test_bad_files_are_refused_naming_the_key_and_the_fix(tmp_path: Path, text: str,
                                                           named: str) -> None:
    with pytest.raises(ConfigError, match=r"--web\.config\.file") as refused:
        load_web_config(write(tmp_path, text))
    assert named in str(refused.value)
    assert "; fix: " in str(refused.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*fix: point it at a readable file"):
        load_web_config(tmp_path / "absent.yml")


def test_basic_auth_accepts_the_password_of_the_hash_only() -> None:
    auth = BasicAuth({"prometheus": HASH})
    assert auth
    assert auth.check(basic("prometheus:s3cret pass"))
    assert auth.check(basic("prometheus:s3cret pass"))  # again, from the remembered success
    assert not auth.check(basic("prometheus:s3cret pas"))
    assert not auth.check(basic("prometheus:"))
    assert not auth.check(basic("grafana:s3cret pass"))  # unknown user


def test_a_password_over_72_bytes_is_refused_not_an_error() -> None:
    """bcrypt reads 72 bytes and the library refuses more: such a password is wrong, even
    one whose first 72 bytes are right."""
    long_hash = bcrypt.hashpw(b"p" * 72, bcrypt.gensalt(rounds=4)).decode()
    auth = BasicAuth({"prometheus": HASH, "long": long_hash})
    assert not auth.check(basic("prometheus:" + "x" * 100))
    assert not auth.check(basic("long:" + "p" * 100))
    assert auth.check(basic("long:" + "p" * 72))


def test_unknown_users_cost_a_bcrypt_check_and_every_result_is_remembered() -> None:
    """An unknown user is not refused from the header alone (that would answer faster than
    a wrong password of a known one): bcrypt decides, against a dummy hash of the users'
    cost; then the refusal is remembered, as a wrong password's and a success are."""
    auth = BasicAuth({"prometheus": HASH})
    for header in (basic("grafana:s3cret pass"), basic("prometheus:guess")):
        assert auth.cached(header) is None  # only bcrypt can tell
        assert not auth.check(header)
        assert auth.cached(header) is False
    right = basic("prometheus:s3cret pass")
    assert auth.cached(right) is None
    assert auth.check(right) and auth.cached(right) is True
    assert auth._dummy is not None and auth._dummy.startswith(b"$2b$04$")


def test_remembered_refusals_are_bounded_and_keep_the_successes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webconfig, "MAX_REMEMBERED", 3)
    auth = BasicAuth({"prometheus": HASH})
    right = basic("prometheus:s3cret pass")
    assert auth.check(right)
    guesses = [basic(f"prometheus:guess {n}") for n in range(5)]
    assert not any(auth.check(guess) for guess in guesses)
    assert [auth.cached(guess) for guess in guesses] == [None, None, False, False, False]
    assert auth.cached(right) is True


@pytest.mark.parametrize("header", [
    "", "Bearer s3cret", "Basic", "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"prometheus").decode(),  # no colon
    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8
])
def test_basic_auth_refuses_malformed_headers(header: str) -> None:
    assert not BasicAuth({"prometheus": HASH}).check(header)


def test_no_users_means_no_basic_auth() -> None:
    assert not BasicAuth({})


@pytest.mark.parametrize(("address", "parsed"), [
    (":9864", ("0.0.0.0", 9864, socket.AF_INET)),  # every interface, as documented
    ("127.0.0.1:9864", ("127.0.0.1", 9864, socket.AF_INET)),
    ("[::1]:9864", ("::1", 9864, socket.AF_INET6)),
    ("localhost:0", ("localhost", 0, socket.AF_INET)),
])
def test_listen_addresses(address: str, parsed: tuple[str, int, socket.AddressFamily]) -> None:
    assert parse_listen_address(address) == parsed


@pytest.mark.parametrize("address", ["9864", "host:port", ":70000", ":", "", "[::1]"])
def test_bad_listen_addresses_name_the_flag_and_the_fix(address: str) -> None:
    with pytest.raises(ValueError, match=r"--web.listen-address=.*fix: use e.g. :9864"):
        parse_listen_address(address)
