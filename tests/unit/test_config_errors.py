"""Every configuration problem in one run: each part (the YAML file, the database
variables, the WA API variables, the secret files) is checked even when another failed, and
every problem is a line of its own naming its key and its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_settings
from exporter.webconfig import load_web_config

SECRET = "pa55-w0rd=never-shown"
BASE = {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "db"}
THREE_MISTAKES = ("collectors:\n  messages:\n    interval: banana\n"
                  "actions:\n  allowed: [nuke]\n"
                  "wa_api:\n  connect_timeout: -1s\n")


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yml"
    path.write_text(text)
    return path


def _problems(tmp_path: Path, yaml_text: str | None, environ: dict[str, str],
              db_env: str | None = None) -> list[str]:
    config = _yaml(tmp_path, yaml_text) if yaml_text is not None else None
    db_env_file = None
    if db_env is not None:
        db_env_file = tmp_path / "db.env"
        db_env_file.write_text(db_env)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, db_env_file=db_env_file, environ=environ)
    problems = caught.value.problems
    assert str(caught.value) == "\n".join(problems)
    for problem in problems:
        assert "\n" not in problem and "; fix: " in problem, problem
        assert SECRET not in problem
    return problems


def _keys(problems: list[str]) -> list[str]:
    """The key each line starts with (``key=value: ...`` or ``key: ...``)."""
    return [problem.split(":", 1)[0].split("=", 1)[0] for problem in problems]


def test_every_wrong_key_of_the_file_is_reported_at_once(tmp_path: Path) -> None:
    problems = _problems(tmp_path, THREE_MISTAKES, BASE)
    assert _keys(problems) == ["collectors.messages.interval", "actions.allowed.0",
                               "wa_api.connect_timeout"]
    assert "'banana': is not a duration" in problems[0]
    assert "='nuke': is not an action; fix: use one of gc, media_gc, cleanup" in problems[1]


def test_every_part_is_checked_even_when_another_fails(tmp_path: Path) -> None:
    problems = _problems(tmp_path, THREE_MISTAKES, {
        "WA_DB_PORT": "http", "WA_DB_PASSWORD": SECRET,
        "WA_WEB_URL": "https://wa:9090", "WA_WEB_PASSWORD_FILE": str(tmp_path / "missing")},
        db_env="WA_DB_ENGINE=oracle\nWA_DB_HOSTNAME=db\n")
    assert _keys(problems) == [
        "WA_WEB_PASSWORD_FILE",  # the secret files, read before any part is checked
        "collectors.messages.interval", "actions.allowed.0", "wa_api.connect_timeout",
        "WA_DB_ENGINE", "WA_DB_PORT",  # the database variables
        "WA_WEB_USERNAME",  # the WA API's; its unread password is not reported twice
    ]


def test_a_wrong_value_is_reported_once_not_again_by_the_defaults_that_follow_it(
        tmp_path: Path) -> None:
    """Unset, timeout, query_timeout and stale_after follow the interval: a wrong interval
    leaves them nothing to follow, which is not a problem of theirs."""
    problems = _problems(tmp_path, "collectors:\n  messages: {interval: banana}\n"
                                   "  logs: {interval: soon}\n", BASE)
    assert _keys(problems) == ["collectors.messages.interval", "collectors.logs.interval"]


def test_a_contradiction_is_reported_with_the_wrong_values_of_other_sections(
        tmp_path: Path) -> None:
    problems = _problems(tmp_path, "collectors:\n  containers: {interval: 1m, stale_after: "
                                   "30s}\nactions:\n  allowed: [nuke]\n", BASE)
    assert _keys(problems) == ["collectors.containers", "actions.allowed.0"]
    assert "stale_after (30s)" in problems[0] and "interval (1m)" in problems[0]


def test_an_unreadable_db_env_leaves_the_file_checked_and_the_variables_unclaimed(
        tmp_path: Path) -> None:
    config = _yaml(tmp_path, THREE_MISTAKES)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, db_env_file=tmp_path / "missing.env", environ={})
    assert _keys(caught.value.problems) == ["--db.env-file", "collectors.messages.interval",
                                           "actions.allowed.0", "wa_api.connect_timeout"]


def test_a_wrong_file_does_not_claim_a_missing_database(tmp_path: Path) -> None:
    """Whether the messages collector (and so WA_DB_ENGINE) is wanted is the file's to say:
    while the file is wrong, a missing WA_DB_ENGINE is not reported."""
    problems = _problems(tmp_path, "collectors:\n  messages: {enabled: false}\n"
                                   "  volume: {interval: banana}\n", {})
    assert _keys(problems) == ["collectors.volume.interval"]


def test_both_webhook_secret_files_are_reported(tmp_path: Path) -> None:
    problems = _problems(tmp_path, (
        f"webhook:\n  bearer_token_file: {tmp_path / 'no-token'}\n"
        f"  basic_auth_username: am\n  basic_auth_password_file: {tmp_path / 'no-password'}\n"
        "collectors:\n  messages: {interval: banana}\n"), BASE)
    assert problems[0].startswith("collectors.messages.interval=")
    assert problems[1].startswith(f"webhook: bearer_token_file: cannot read "
                                  f"'{tmp_path / 'no-token'}'")
    assert problems[2].startswith(f"webhook: basic_auth_password_file: cannot read "
                                  f"'{tmp_path / 'no-password'}'")
    assert len(problems) == 3


def test_a_thousand_wrong_entries_are_twenty_lines_and_a_count(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "actions:\n  instances: [" + ", ".join(["''"] * 1000)
                         + "]\n", BASE)
    assert len(problems) == 21
    assert _keys(problems[:20]) == [f"actions.instances.{n}" for n in range(20)]
    assert problems[20].startswith("980 more problems like these; fix: ")


def test_the_same_problem_is_one_line() -> None:
    assert ConfigError("a: x; fix: y", "b: z; fix: w", "a: x; fix: y").problems == [
        "a: x; fix: y", "b: z; fix: w"]


def test_every_problem_of_a_web_config_is_reported(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "basic_auth_users:\n  ops: not-a-hash\n  dev: neither\n"
                           "tls_server_config:\n  cert_file: /x.pem\n  key_file: /x.key\n"
                           "  client_auth_type: RequireAndVerifyClientCert\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.problems == [
        "--web.config.file: basic_auth_users.ops: not a bcrypt hash; fix: use e.g. "
        "htpasswd -nBC 10 '' | tr -d ':\\n'",
        "--web.config.file: basic_auth_users.dev: not a bcrypt hash; fix: use e.g. "
        "htpasswd -nBC 10 '' | tr -d ':\\n'",
        "--web.config.file: tls_server_config.client_ca_file: not set but client_auth_type "
        "is RequireAndVerifyClientCert; fix: set client_ca_file to the CA that signs client "
        "certificates"]
    path.write_text("tls_server_config: {min_version: TLS9}\nunknown: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert [problem.removeprefix("--web.config.file: ").split(":")[0].split("=")[0]
            for problem in caught.value.problems] == [
        "tls_server_config.cert_file", "tls_server_config.key_file",
        "tls_server_config.min_version", "unknown"]
    # The fix of a key inside an optional section is the key's own.
    assert caught.value.problems[0].endswith("not set; fix: point cert_file at the server "
                                             "certificate (PEM)")
