"""Settings: the WA db.env as-is, the environment, YAML, *_FILE secrets, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, load_settings, parse_duration, read_env_file, render

SECRET = "pa55-w0rd=with#odd'chars"
BASE = {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "db"}


def test_reads_the_wa_db_env_as_is(tmp_path: Path) -> None:
    env_file = tmp_path / "db.env"
    env_file.write_text(
        "# WA database settings\r\n\nWA_DB_ENGINE=MYSQL\nWA_DB_HOSTNAME = mysql.internal \n"
        "export WA_DB_PORT=3307\nWA_DB_USERNAME='wa user'\nWA_DB_PASSWORD=\"" + SECRET + "\"\n"
        "WA_DB_NAME_PREFIX=wa_\nWA_DB_CONNECTION_IDLE_TIMEOUT=180000\nEXTRA_THING=ignored\n")
    settings = load_settings(db_env_file=env_file, environ={})
    db = settings.database
    assert db is not None
    assert (db.engine, db.hostname, db.port, db.username, db.name_prefix) == (
        "MYSQL", "mysql.internal", 3307, "wa user", "wa_")
    assert db.password is not None and db.password.reveal() == SECRET
    assert db.connection_idle_timeout_ms == 180000


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "db.env"
    env_file.write_text("WA_DB_ENGINE=MYSQL\nWA_DB_HOSTNAME=from-file\n")
    settings = load_settings(db_env_file=env_file, environ={"WA_DB_HOSTNAME": "from-env"})
    assert settings.database is not None and settings.database.hostname == "from-env"


def test_default_ports_per_engine() -> None:
    mysql = load_settings(environ=BASE).database
    pg = load_settings(environ={**BASE, "WA_DB_ENGINE": "pgsql"}).database
    assert mysql is not None and mysql.port == 3306
    assert pg is not None and pg.port == 5432 and pg.engine == "PGSQL"


def test_password_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    settings = load_settings(environ={**BASE, "WA_DB_PASSWORD_FILE": str(secret_file)})
    assert settings.database is not None and settings.database.password is not None
    assert settings.database.password.reveal() == SECRET


@pytest.mark.parametrize(("environ", "key", "words"), [
    ({**BASE, "WA_DB_ENGINE": "oracle"}, "WA_DB_ENGINE", "MYSQL or PGSQL"),
    ({**BASE, "WA_DB_PORT": "70000"}, "WA_DB_PORT", "between 1 and 65535"),
    ({**BASE, "WA_DB_PORT": "http"}, "WA_DB_PORT", "valid integer"),
    ({**BASE, "WA_DB_SSL_VERIFY": "perhaps"}, "WA_DB_SSL_VERIFY", "true or false"),
    ({**BASE, "WA_DB_CONNECTION_IDLE_TIMEOUT": "-5"}, "WA_DB_CONNECTION_IDLE_TIMEOUT",
     "milliseconds"),
    ({**BASE, "WA_DB_PASSWORD_FILE": "/nonexistent/pw"}, "WA_DB_PASSWORD_FILE", "readable file"),
    ({**BASE, "WA_DB_PASSWORD": SECRET, "WA_DB_PASSWORD_FILE": "/x"}, "WA_DB_PASSWORD",
     "only one"),
    ({"WA_DB_HOSTNAME": "db"}, "WA_DB_ENGINE", "--db.env-file"),
    ({"WA_DB_ENGINE": "MYSQL"}, "WA_DB_HOSTNAME", "set WA_DB_HOSTNAME"),
])
def test_bad_values_name_the_key_and_the_fix(environ: dict[str, str], key: str,
                                             words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    message = str(caught.value)
    assert message.startswith(key), message
    assert "; fix: " in message and words in message
    assert "\n" not in message and SECRET not in message


@pytest.mark.parametrize(("yaml_text", "key", "words"), [
    ("collectors:\n  messages:\n    intervall: 30s\n", "collectors.messages.intervall",
     "unknown key"),
    ("colectors: {}\n", "colectors", "unknown key"),
    ("collectors:\n  messages:\n    interval: soon\n", "collectors.messages.interval",
     "duration such as"),
    ("collectors:\n  messages:\n    exact_count_below: -1\n",
     "collectors.messages.exact_count_below", "row count"),
    ("collectors: [\n", "--config.file", "not valid YAML"),
    ("- a list\n", "--config.file", "mapping"),
])
def test_bad_yaml_names_the_key_and_the_fix(tmp_path: Path, yaml_text: str, key: str,
                                            words: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=path, environ=BASE)
    message = str(caught.value)
    assert message.startswith(key) and words in message and "fix:" in message, message


def test_unreadable_env_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--db.env-file: cannot read .*; fix: "):
        read_env_file(tmp_path / "missing.env")
    bad = tmp_path / "bad.env"
    bad.write_text("WA_DB_ENGINE=MYSQL\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"bad.env:2 is not a KEY=value line"):
        read_env_file(bad)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), (15, 15.0), ("250ms", 0.25), ("1.5m", 90.0), ("2h", 7200.0), ("1d", 86400.0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-3s", "soon", "5 parsecs", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_render_hides_secrets() -> None:
    text = render(load_settings(environ={**BASE, "WA_DB_PASSWORD": SECRET}))
    assert SECRET not in text and "WA_DB_PASSWORD: <secret>" in text


def test_render_explains_the_two_large_table_rows_beside_each(tmp_path: Path) -> None:
    config = tmp_path / "wa-exporter.yml"
    config.write_text("actions: {gc: {large_table_rows: 12000000}}\n"
                      "upgrade: {large_table_rows: 2500000}\n")
    text = render(load_settings(config_file=config, environ=BASE))
    noted = {line.split("#")[0].strip(): line.split("# ", 1)[1]
             for line in text.splitlines() if "large_table_rows" in line}
    assert noted["large_table_rows: 12000000"].startswith("message GC repeats rounds on a "
                                                          "table above this")
    assert noted["large_table_rows: 2500000"].startswith("a table above this is large before "
                                                         "an upgrade (the guide's 2 M)")
    shown = yaml.safe_load(text)  # still YAML, and the values are as set
    assert shown["actions"]["gc"]["large_table_rows"] == 12_000_000
    assert shown["upgrade"]["large_table_rows"] == 2_500_000


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], env={"PATH": "/usr/bin",
                          **env}, capture_output=True, text=True, timeout=60)


def test_check_config_prints_effective_config_without_secrets(tmp_path: Path) -> None:
    env_file = tmp_path / "db.env"
    env_file.write_text(f"WA_DB_ENGINE=PGSQL\nWA_DB_HOSTNAME=pg\nWA_DB_PASSWORD={SECRET}\n")
    result = _cli("check-config", "--db.env-file", str(env_file), env={})
    assert result.returncode == 0, result.stderr
    assert "WA_DB_ENGINE: PGSQL" in result.stdout and "<secret>" in result.stdout
    assert "interval: 1m" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_check_config_fails_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = _cli("check-config", env={**BASE, "WA_DB_PORT": "0x10", "WA_DB_PASSWORD": SECRET})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wa-exporter: config error: WA_DB_PORT")
    assert "Traceback" not in result.stderr and SECRET not in result.stderr


def test_bad_listen_address_is_one_line(tmp_path: Path) -> None:
    result = _cli("--web.listen-address", "nowhere", env=BASE)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("wa-exporter: --web.listen-address='nowhere'")
    assert "Traceback" not in result.stderr


def test_help_and_version() -> None:
    help_text = _cli("--help", env={}).stdout
    for words in ("--web.listen-address", "--db.env-file", "check-config", "WA_DB_PASSWORD_FILE",
                  "exit codes"):
        assert words in help_text
    from exporter import __version__
    assert __version__ in _cli("--version", env={}).stdout


def test_db_env_with_a_utf8_byte_order_mark_is_read_as_docker_reads_it(tmp_path: Path) -> None:
    env_file = tmp_path / "db.env"
    env_file.write_bytes(b"\xef\xbb\xbfWA_DB_ENGINE=PGSQL\r\nWA_DB_HOSTNAME=pg\r\n")
    assert read_env_file(env_file) == {"WA_DB_ENGINE": "PGSQL", "WA_DB_HOSTNAME": "pg"}


@pytest.mark.parametrize("flag", ["--config.file", "--web.config.file"])
def test_a_yaml_file_that_is_not_utf8_is_a_config_error(tmp_path: Path, flag: str) -> None:
    path = tmp_path / "settings.yml"
    path.write_bytes(b"collectors:\n  messages: {enabled: false}  # caf\xe9 latin-1\n")
    result = _cli(flag, str(path), "--web.listen-address", "127.0.0.1:0", env=BASE)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wa-exporter: config error: {flag}")
    assert "not UTF-8" in lines[0] and "Traceback" not in result.stderr


def test_a_secret_file_that_is_not_utf8_is_a_config_error_without_its_bytes(
        tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_bytes(b"pass\xff\xfeword")
    with pytest.raises(ConfigError, match="not UTF-8") as raised:
        load_settings(environ={**BASE, "WA_DB_PASSWORD_FILE": str(secret)})
    assert "xff" not in str(raised.value)


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yml"
    path.write_text(text)
    return path


def test_a_collector_timeout_defaults_to_30s_or_the_interval_if_shorter(tmp_path: Path) -> None:
    settings = load_settings(environ=BASE, config_file=_yaml(tmp_path, (
        "collectors:\n  messages: {interval: 10s}\n  logs: {interval: 5m}\n"
        "  volume_scan: {interval: 20s, timeout: null}\n")))
    collectors = settings.collectors
    assert collectors.messages.timeout == 10.0 and collectors.logs.timeout == 30.0
    assert collectors.volume_scan.timeout == 20.0  # null is unset, even over its own 120s
    assert collectors.volume.timeout == 30.0 and collectors.containers.timeout == 15.0


def test_webhook_secrets_are_read_from_their_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0ken-from-file\n")
    (tmp_path / "password").write_text(SECRET + "\n")
    settings = load_settings(environ=BASE, config_file=_yaml(tmp_path, (
        f"webhook:\n  bearer_token_file: {tmp_path / 'token'}\n  basic_auth_username: am\n"
        f"  basic_auth_password_file: {tmp_path / 'password'}\n")))
    webhook = settings.webhook
    assert webhook.bearer_token is not None and webhook.bearer_token.reveal() == "t0ken-from-file"
    assert webhook.basic_auth_password is not None
    assert webhook.basic_auth_password.reveal() == SECRET
    assert webhook.bearer_token_file is None and webhook.basic_auth_password_file is None
    assert SECRET not in render(settings)


def test_a_wrong_webhook_value_is_reported_before_an_unreadable_secret_file(
        tmp_path: Path) -> None:
    config = _yaml(tmp_path, f"webhook:\n  bearer_token_file: {tmp_path / 'missing'}\n"
                             "  max_body_bytes: 1\n")
    with pytest.raises(ConfigError, match=r"^webhook\.max_body_bytes=1: "):
        load_settings(environ=BASE, config_file=config)
