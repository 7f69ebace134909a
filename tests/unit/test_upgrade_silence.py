"""The silence client's checks that need no Alertmanager: flags, secrets, the instance guess."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from exporter.config import ConfigError
from exporter.upgrade.silence import Alertmanager, SilenceError, default_instance


def test_default_instance_is_this_host_and_the_listen_port() -> None:
    assert default_instance(":9864") == f"{socket.gethostname()}:9864"
    assert default_instance("0.0.0.0:19864") == f"{socket.gethostname()}:19864"


@pytest.mark.parametrize(("url", "kwargs", "message"), [
    ("ftp://alertmanager:9093", {}, r"is not an http\(s\) URL"),
    ("http://ops:pw@am:9093", {}, "holds credentials"),
    ("http://am:9093", {"username": "ops"}, "go together"),
])
def test_bad_options_are_config_errors(url: str, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Alertmanager(url, **kwargs)  # type: ignore[arg-type]
    assert "pw" not in str(caught.value)


def test_unreadable_secret_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--alertmanager\.bearer-token-file: cannot read"):
        Alertmanager("http://am:9093", bearer_token_file=tmp_path / "missing")


def test_unreachable_alertmanager_is_an_error_without_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-3f9a1c7e\n")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    am = Alertmanager(f"http://127.0.0.1:{port}", bearer_token_file=token)
    with pytest.raises(SilenceError, match="unreachable") as caught:
        am.silence(60, "host:9864")
    assert "tok-3f9a1c7e" not in str(caught.value)
