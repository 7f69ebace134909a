"""Settings: the WA db.env as-is, the environment, YAML, *_FILE secrets, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import time
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


@pytest.mark.parametrize(("yaml_text", "environ", "key"), [
    ("webhook:\n  bearer_token: ''\n", {}, "webhook.bearer_token: is empty"),
    ("webhook:\n  basic_auth_username: am\n  basic_auth_password: '   '\n", {},
     "webhook.basic_auth_password: is empty"),
    ("webhook:\n  bearer_token_file: {empty}\n", {}, "bearer_token_file: '{empty}' is empty"),
    ("webhook:\n  basic_auth_username: am\n  basic_auth_password_file: {empty}\n", {},
     "basic_auth_password_file: '{empty}' is empty"),
    ("", {"WA_DB_PASSWORD": " "}, "WA_DB_PASSWORD: is empty"),
    ("", {"WA_DB_PASSWORD_FILE": "{empty}"}, "WA_DB_PASSWORD_FILE: '{empty}' is empty"),
    ("", {"WA_WEB_URL": "http://wa", "WA_WEB_USERNAME": "admin",
          "WA_WEB_PASSWORD_FILE": "{empty}"}, "WA_WEB_PASSWORD_FILE: '{empty}' is empty"),
], ids=["token", "password", "token-file", "password-file", "db-password", "db-password-file",
        "web-password-file"])
def test_an_empty_secret_is_a_config_error(tmp_path: Path, yaml_text: str,
                                           environ: dict[str, str], key: str) -> None:
    """An empty webhook token would be matched by ``Authorization: Bearer `` (nothing);
    every secret, given directly or in a file, must hold more than whitespace."""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    environ = {k: v.format(empty=empty) for k, v in environ.items()}
    config = _yaml(tmp_path, yaml_text.format(empty=empty)) if yaml_text else None
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, environ={**BASE, **environ})
    assert key.format(empty=empty) in str(caught.value)
    assert "fix: " in str(caught.value)


@pytest.mark.parametrize(("yaml_text", "keys"), [
    ("collectors:\n  messages: {interval: 10s, query_timeout: 20s}\n",
     ("collectors.messages: query_timeout (20s)", "interval (10s)")),
    ("collectors:\n  messages: {interval: 1m, timeout: 5s, query_timeout: 10s}\n",
     ("collectors.messages: query_timeout (10s)", "timeout (5s)")),
    ("collectors:\n  containers: {interval: 1m, stale_after: 30s}\n",
     ("collectors.containers: stale_after (30s)", "interval (1m)")),
    ("collectors:\n  volume_scan: {interval: 15m, stale_after: 15m}\n",
     ("collectors.volume_scan: stale_after (15m)", "interval (15m)")),
    ("actions:\n  window: {start: '00:00', end: '00:00'}\n",
     ("actions.window: start and end are both 00:00",)),
], ids=["query-over-interval", "query-over-timeout", "stale-below-interval",
        "stale-at-interval", "empty-window"])
def test_contradictory_settings_are_refused_naming_both_keys(tmp_path: Path, yaml_text: str,
                                                             keys: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=_yaml(tmp_path, yaml_text), environ=BASE)
    message = str(caught.value)
    assert all(key in message for key in keys), message
    assert "; fix: " in message and "\n" not in message


def test_defaults_follow_the_interval_so_only_what_is_written_can_contradict(
        tmp_path: Path) -> None:
    """Unset, query_timeout is 20s or the refresh's timeout if shorter, and stale_after its
    default or three intervals if longer: setting an interval alone is never refused."""
    collectors = load_settings(environ=BASE, config_file=_yaml(tmp_path, (
        "collectors:\n  messages: {interval: 10s}\n  logs: {interval: 10m}\n"
        "  volume_scan: {interval: 1h}\n"))).collectors
    assert (collectors.messages.timeout, collectors.messages.query_timeout) == (10.0, 10.0)
    assert collectors.messages.stale_after == 300.0 and collectors.logs.stale_after == 1800.0
    assert collectors.volume_scan.stale_after == 3 * 3600.0
    defaults = load_settings(environ=BASE).collectors
    assert defaults.messages.query_timeout == 20.0 and defaults.volume_scan.stale_after == 900.0


def alias_bomb(where: str) -> str:
    """Nine levels of nine aliases each: 387 million strings once expanded, 600 bytes."""
    levels = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"&{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return where.format(bomb="[" + ", ".join(levels) + "]")


@pytest.mark.parametrize("text", [
    alias_bomb("collectors:\n  messages:\n    interval: {bomb}\n"),
    alias_bomb("actions:\n  instances: {bomb}\n"),
    "collectors: &loop\n  messages: *loop\n",
], ids=["bomb-in-a-duration", "bomb-in-a-list", "alias-of-itself"])
def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path: Path, text: str) -> None:
    """Counted through its aliases, in the time of the file, never expanded nor quoted
    (tests/faults/test_broken_input.py runs check-config on it under a memory limit)."""
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^--config\.file: .* expands to more than 100000 "):
        load_settings(config_file=_yaml(tmp_path, text), environ=BASE)
    assert time.monotonic() - started < 1


def test_a_large_wrong_value_is_quoted_by_its_start_only(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "collectors:\n  messages:\n    interval: " + "9x" * 100_000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=path, environ=BASE)
    assert str(caught.value).startswith("collectors.messages.interval='9x9x")
    assert len(str(caught.value)) < 300


def test_a_config_file_over_1_mib_is_refused_unread(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"^--config\.file: .* is larger than 1024 KiB"):
        load_settings(config_file=path, environ=BASE)
