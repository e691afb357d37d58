"""CyclesConfig and from_env: the official SDK's CYCLES_* variables, plus ours."""

from __future__ import annotations

from pathlib import Path

import pytest

import runcycles_core as rc

FULL_ENV = {
    "CYCLES_BASE_URL": "http://localhost:7878/",
    "CYCLES_API_KEY": "secret-key",
    "CYCLES_TENANT": "acme",
    "CYCLES_WORKSPACE": "prod",
    "CYCLES_APP": "support",
    "CYCLES_WORKFLOW": "triage",
    "CYCLES_AGENT": "bot",
    "CYCLES_TOOLSET": "search",
    "CYCLES_CONNECT_TIMEOUT": "1.5",
    "CYCLES_READ_TIMEOUT": "9",
    "CYCLES_WRITE_TIMEOUT": "4",
    "CYCLES_POOL_TIMEOUT": "3",
    "CYCLES_RETRY_ENABLED": "false",
    "CYCLES_RETRY_MAX_ATTEMPTS": "2",
    "CYCLES_RETRY_INITIAL_DELAY": "0.1",
    "CYCLES_RETRY_MULTIPLIER": "3",
    "CYCLES_RETRY_MAX_DELAY": "12",
    "CYCLES_RETRY_JITTER": "0.5",
    "CYCLES_RETRY_FLUSH_TIMEOUT": "2",
    "CYCLES_JOURNAL_ENABLED": "no",
    "CYCLES_JOURNAL_DIR": "/tmp/journal",
    "CYCLES_USER_AGENT": "bot/2",
}


def test_from_env_reads_every_variable() -> None:
    config = rc.CyclesConfig.from_env(environ=FULL_ENV)
    assert config.base_url == "http://localhost:7878"
    assert config.api_key == "secret-key"
    assert (config.tenant, config.workspace, config.app) == ("acme", "prod", "support")
    assert (config.workflow, config.agent, config.toolset) == ("triage", "bot", "search")
    assert (config.connect_timeout, config.read_timeout) == (1.5, 9.0)
    assert (config.write_timeout, config.pool_timeout) == (4.0, 3.0)
    assert config.retry_policy == rc.RetryPolicy(
        enabled=False, max_retries=2, initial_delay=0.1, multiplier=3.0, max_delay=12.0, jitter=0.5
    )
    assert config.retry_flush_timeout == 2.0
    assert config.journal_enabled is False
    assert config.journal_dir == "/tmp/journal"
    assert config.user_agent == "bot/2"


def test_from_env_defaults_match_the_official_sdk() -> None:
    config = rc.CyclesConfig.from_env(
        environ={"CYCLES_BASE_URL": "http://x", "CYCLES_API_KEY": "k"}
    )
    assert config == rc.CyclesConfig(base_url="http://x", api_key="k")
    assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
    assert config.retry_enabled is True
    assert config.retry_max_attempts == 5
    assert (config.retry_initial_delay, config.retry_multiplier) == (0.5, 2.0)
    assert config.retry_max_delay == 30.0
    assert config.retry_flush_timeout == 10.0
    assert config.journal_enabled is True
    assert config.journal_dir is None
    assert config.tenant is None


def test_from_env_uses_os_environ_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_BASE_URL", "http://prefixed")
    monkeypatch.setenv("MY_API_KEY", "k2")
    monkeypatch.setenv("MY_TENANT", "t2")
    config = rc.CyclesConfig.from_env(prefix="MY_")
    assert (config.base_url, config.api_key, config.tenant) == ("http://prefixed", "k2", "t2")


@pytest.mark.parametrize("missing", ["CYCLES_BASE_URL", "CYCLES_API_KEY"])
def test_required_variables(missing: str) -> None:
    env = {"CYCLES_BASE_URL": "http://x", "CYCLES_API_KEY": "k"}
    del env[missing]
    with pytest.raises(ValueError, match=missing):
        rc.CyclesConfig.from_env(environ=env)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CYCLES_RETRY_ENABLED", "maybe", "CYCLES_RETRY_ENABLED"),
        ("CYCLES_READ_TIMEOUT", "soon", "CYCLES_READ_TIMEOUT"),
        ("CYCLES_RETRY_MAX_ATTEMPTS", "2.5", "CYCLES_RETRY_MAX_ATTEMPTS"),
        ("CYCLES_RETRY_JITTER", "2", "jitter"),
        ("CYCLES_RETRY_MULTIPLIER", "0.5", "multiplier"),
    ],
)
def test_bad_values_are_rejected(name: str, value: str, message: str) -> None:
    env = {"CYCLES_BASE_URL": "http://x", "CYCLES_API_KEY": "k", name: value}
    with pytest.raises(ValueError, match=message):
        rc.CyclesConfig.from_env(environ=env)


@pytest.mark.parametrize(("raw", "expected"), [("TRUE", True), ("1", True), ("off", False)])
def test_booleans(raw: str, expected: bool) -> None:
    env = {"CYCLES_BASE_URL": "http://x", "CYCLES_API_KEY": "k", "CYCLES_RETRY_ENABLED": raw}
    assert rc.CyclesConfig.from_env(environ=env).retry_enabled is expected


def test_repr_hides_the_api_key() -> None:
    text = repr(rc.CyclesConfig(base_url="http://x", api_key="super-secret"))
    assert "super-secret" not in text
    assert "http://x" in text


def test_default_subject() -> None:
    config = rc.CyclesConfig(base_url="http://x", api_key="k", tenant="acme", agent="bot")
    assert config.default_subject() == rc.Subject(tenant="acme", agent="bot")
    assert config.default_subject(agent="other", toolset="web") == rc.Subject(
        tenant="acme", agent="other", toolset="web"
    )
    assert rc.CyclesConfig(base_url="http://x", api_key="k").default_subject() is None


def test_journal_sync_setting_reaches_the_journal(tmp_path: Path) -> None:
    from runcycles_core.settlement import journal_for

    env = {"CYCLES_BASE_URL": "http://s", "CYCLES_API_KEY": "k", "CYCLES_TENANT": "t"}
    assert rc.CyclesConfig.from_env(environ=env).journal_sync == "overlap"
    strict = rc.CyclesConfig.from_env(
        environ={**env, "CYCLES_JOURNAL_SYNC": "before_send", "CYCLES_JOURNAL_DIR": str(tmp_path)}
    )
    assert journal_for(strict).sync == "before_send"
    with pytest.raises(ValueError, match="journal_sync"):
        rc.CyclesConfig(base_url="http://s", api_key="k", journal_sync="sometimes")
