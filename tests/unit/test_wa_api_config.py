"""WA_WEB_* variables and the YAML ``wa_api`` / ``actions.gc`` sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_settings, render

DB = {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "db"}
WEB = {"WA_WEB_URL": "https://127.0.0.1:9090/", "WA_WEB_USERNAME": "admin",
       "WA_WEB_PASSWORD": "pa55-w0rd"}


def yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_without_wa_web_variables_there_are_no_api_settings() -> None:
    assert load_settings(environ=DB).wa_api is None


def test_variables_from_db_env_and_defaults(tmp_path: Path) -> None:
    env_file = tmp_path / "db.env"
    env_file.write_text("WA_DB_ENGINE=MYSQL\nWA_DB_HOSTNAME=db\n" +
                        "".join(f"{k}={v}\n" for k, v in WEB.items()))
    api = load_settings(db_env_file=env_file, environ={}).wa_api
    assert api is not None
    assert (api.url, api.username, api.password.reveal()) == (
        "https://127.0.0.1:9090", "admin", "pa55-w0rd")
    assert (api.verify, api.ca_file, api.connect_timeout, api.read_timeout) == (
        True, None, 5.0, 30.0)
    assert (api.retry_attempts, api.retry_backoff, api.token_refresh_margin) == (3, 0.5, 300.0)


def test_password_from_file_and_yaml_options(tmp_path: Path) -> None:
    secret = tmp_path / "web-password"
    secret.write_text("from-file\n")
    config = yaml_file(tmp_path, "wa_api:\n  verify: false\n  read_timeout: 2m\n"
                                 "  retry_attempts: 5\n")
    environ = {**DB, **WEB, "WA_WEB_PASSWORD": "", "WA_WEB_PASSWORD_FILE": str(secret)}
    api = load_settings(environ=environ, config_file=config).wa_api
    assert api is not None and api.password.reveal() == "from-file"
    assert (api.verify, api.read_timeout, api.retry_attempts) == (False, 120.0, 5)


def test_wa_web_verify_wins_over_the_yaml(tmp_path: Path) -> None:
    config = yaml_file(tmp_path, "wa_api: {verify: false}\n")
    api = load_settings(environ={**DB, **WEB, "WA_WEB_VERIFY": "true"}, config_file=config).wa_api
    assert api is not None and api.verify is True


@pytest.mark.parametrize(("environ", "expected"), [
    ({"WA_WEB_URL": "https://wa:9090"},
     "WA_WEB_USERNAME: not set; fix: set WA_WEB_USERNAME"),
    ({"WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "pa55-w0rd"},
     "WA_WEB_URL: not set; fix: set WA_WEB_URL to the webapp's address"),
    ({**WEB, "WA_WEB_PASSWORD": ""}, "WA_WEB_PASSWORD: not set; fix: set WA_WEB_PASSWORD or"),
    ({**WEB, "WA_WEB_URL": "wa:9090"}, "WA_WEB_URL='wa:9090': is not an http(s) URL; fix:"),
    ({**WEB, "WA_WEB_URL": "https://admin:pa55-w0rd@wa"},
     "WA_WEB_URL: holds credentials; fix: remove them"),
    ({**WEB, "WA_WEB_VERIFY": "sometimes"}, "WA_WEB_VERIFY='sometimes': is not a boolean"),
    ({**WEB, "WA_WEB_CA_FILE": "/nonexistent/ca.pem"},
     "WA_WEB_CA_FILE='/nonexistent/ca.pem': file '/nonexistent/ca.pem' is not readable"),
    ({**WEB, "WA_WEB_CA_FILE": __file__, "WA_WEB_VERIFY": "false"},
     "WA_WEB_CA_FILE is set but TLS verification is off; fix:"),
])
def test_partial_or_wrong_api_settings_are_errors_a_line_each(environ: dict[str, str],
                                                               expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**DB, **environ})
    problems = caught.value.problems
    assert any(expected in problem for problem in problems), problems
    assert all("\n" not in problem and "; fix: " in problem for problem in problems)
    assert "pa55-w0rd" not in str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("wa_api: {retry_attempts: 0}", "wa_api.retry_attempts=0: input should be greater than"),
    ("wa_api: {read_timeout: soon}", "wa_api.read_timeout='soon': is not a duration"),
    ("wa_api: {url: 'https://x'}", "wa_api.url: unknown key"),
    ("actions: {gc: {max_rounds: 0}}", "actions.gc.max_rounds=0: input should be greater"),
    ("actions: {gc: {callback_timeout: 2h}}", "actions.gc: round_timeout must be longer than "
                                              "callback_timeout; fix:"),
    ("actions: {gc: {settle_interval: 2h}}", "actions.gc: round_timeout must be longer than "
                                             "settle_interval; fix:"),
    ("actions: {gc: {rounds: 3}}", "actions.gc.rounds: unknown key; fix: remove it"),
])
def test_yaml_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=DB, config_file=yaml_file(tmp_path, text))
    assert expected in str(caught.value)


def test_gc_settings_defaults_and_overrides(tmp_path: Path) -> None:
    gc = load_settings(environ=DB).actions.gc
    assert (gc.large_table_rows, gc.target_rows, gc.max_rounds) == (10_000_000, None, 5)
    assert (gc.round_pause, gc.callback_timeout, gc.settle_interval, gc.round_timeout) == (
        60.0, 300.0, 30.0, 3600.0)
    config = yaml_file(tmp_path, "actions:\n  gc:\n    large_table_rows: 2000000\n"
                                 "    target_rows: 1000000\n    settle_interval: 10s\n")
    gc = load_settings(environ=DB, config_file=config).actions.gc
    assert (gc.large_table_rows, gc.target_rows, gc.settle_interval) == (2_000_000, 1_000_000,
                                                                         10.0)


def test_check_config_output_hides_the_password() -> None:
    text = render(load_settings(environ={**DB, **WEB}))
    assert "pa55-w0rd" not in text
    assert "password: <secret>" in text and "url: https://127.0.0.1:9090" in text
