"""One rule for every secret given as a file (``read_secret``): the file's UTF-8 text with
its surrounding whitespace removed, and nothing left is a config error; every problem names
the key and the fix and never quotes the content. The same rule for the WA variables'
``*_FILE``, the webhook's ``*_file`` and Alertmanager's ``--alertmanager.*-file``."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from exporter.config import ConfigError, Secret, load_settings, read_secret
from exporter.upgrade.silence import Alertmanager

SECRET = "s3cret pass-w0rd"  # an inner space is part of it


@pytest.mark.parametrize("content", [
    f"{SECRET}\n", f"{SECRET}\r\n", f"  {SECRET}  ", f"\t{SECRET}\n\n", SECRET,
], ids=["newline", "crlf", "spaces", "tab-and-newlines", "bare"])
def test_surrounding_whitespace_is_not_part_of_the_secret(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content.encode("utf-8"))
    assert read_secret(path, "SOME_FILE").reveal() == SECRET


@pytest.mark.parametrize("content", [b"", b"\n", b" \r\n\t "], ids=["empty", "newline",
                                                                    "whitespace"])
def test_an_empty_secret_file_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_secret(path, "SOME_FILE")
    assert str(caught.value) == f"SOME_FILE: '{path}' is empty; fix: write the secret into it"


def test_a_secret_file_that_is_not_utf8_is_named_without_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"pass\xff\xfeword")
    with pytest.raises(ConfigError) as caught:
        read_secret(path, "SOME_FILE")
    message = str(caught.value)
    assert message.startswith(f"SOME_FILE: '{path}' is not UTF-8 text")
    assert message.endswith("; fix: save it as UTF-8")
    assert "pass" not in message.replace(str(path), "") and "xff" not in message


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "missing",
    lambda tmp: tmp,  # a directory
], ids=["missing", "directory"])
def test_an_unreadable_secret_file_is_a_config_error(tmp_path: Path,
                                                     make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        read_secret(path, "SOME_FILE")
    message = str(caught.value)
    assert message.startswith(f"SOME_FILE: cannot read '{path}': ")
    assert message.endswith("; fix: point it at a readable file holding the secret")


def test_a_file_over_1_mib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError, match=r"^SOME_FILE: .* is larger than 1024 KiB; fix: "):
        read_secret(path, "SOME_FILE")


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yml"
    path.write_text(text)
    return path


BASE = {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "db"}
WEB = {"WA_WEB_URL": "https://wa:9090", "WA_WEB_USERNAME": "admin"}


def _db_password(tmp_path: Path, path: Path) -> Secret | None:
    database = load_settings(environ={**BASE, "WA_DB_PASSWORD_FILE": str(path)}).database
    return database.password if database else None


def _web_password(tmp_path: Path, path: Path) -> Secret | None:
    api = load_settings(environ={**BASE, **WEB, "WA_WEB_PASSWORD_FILE": str(path)}).wa_api
    return api.password if api else None


def _webhook_token(tmp_path: Path, path: Path) -> Secret | None:
    config = _yaml(tmp_path, f"webhook: {{bearer_token_file: '{path}'}}\n")
    return load_settings(environ=BASE, config_file=config).webhook.bearer_token


def _webhook_password(tmp_path: Path, path: Path) -> Secret | None:
    config = _yaml(tmp_path, f"webhook: {{basic_auth_username: am, "
                             f"basic_auth_password_file: '{path}'}}\n")
    return load_settings(environ=BASE, config_file=config).webhook.basic_auth_password


class _Recorder(BaseHTTPRequestHandler):
    """Alertmanager's silences endpoint, answering every POST; remembers who called."""

    authorization: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.authorization.append(self.headers.get("Authorization", ""))
        body = b'{"silenceID": "s1"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _sent_authorization(username: str | None = None, password_file: Path | None = None,
                        bearer_token_file: Path | None = None) -> str:
    """The Authorization header an Alertmanager client with these options sends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        manager = Alertmanager(f"http://127.0.0.1:{server.server_port}", username=username,
                               password_file=password_file,
                               bearer_token_file=bearer_token_file)
        manager.silence(60, "host:9864")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    return _Recorder.authorization.pop()


def _alertmanager_password(tmp_path: Path, path: Path) -> Secret | None:
    sent = _sent_authorization(username="ops", password_file=path)
    user, _, password = base64.b64decode(sent.removeprefix("Basic ")).decode().partition(":")
    return Secret(password) if user == "ops" else None


def _alertmanager_token(tmp_path: Path, path: Path) -> Secret | None:
    return Secret(_sent_authorization(bearer_token_file=path).removeprefix("Bearer "))


READERS = [_db_password, _web_password, _webhook_token, _webhook_password,
           _alertmanager_password, _alertmanager_token]


@pytest.mark.parametrize("read", READERS, ids=lambda read: read.__name__.strip("_"))
def test_every_secret_file_is_read_by_the_one_rule(tmp_path: Path,
                                                   read: Callable[[Path, Path], Secret | None]
                                                   ) -> None:
    path = tmp_path / "secret"
    path.write_text(f"  {SECRET} \r\n")
    assert read(tmp_path, path) == Secret(SECRET)
    path.write_text(" \n")
    with pytest.raises(ConfigError, match=r"is empty; fix: write the secret into it"):
        read(tmp_path, path)
