"""Settings are discoverable: a typo names the valid fields; a missing extra names itself."""

from __future__ import annotations

import pytest

import runcycles_core as rc
from runcycles_core.plugin import CyclesSettings, MissingExtraError, needs_extra, resolve_settings


def test_config_typo_names_the_closest_field_and_lists_all() -> None:
    with pytest.raises(TypeError) as caught:
        rc.CyclesConfig(base_url="http://x", api_key="k", retry_max_atempts=1)  # type: ignore[call-arg]
    text = str(caught.value)
    assert "'retry_max_atempts' (did you mean 'retry_max_attempts'?)" in text
    for name in ("base_url", "journal_dir", "outage_policy", "read_timeout"):
        assert name in text


def test_config_still_accepts_every_real_field_and_positional_args() -> None:
    cfg = rc.CyclesConfig("http://x/", "k", tenant="acme", retry_jitter=0.1)
    assert (cfg.base_url, cfg.tenant, cfg.retry_jitter) == ("http://x", "acme", 0.1)


def test_with_options_typo_is_reported_the_same_way() -> None:
    client = rc.CyclesClient(rc.CyclesConfig(base_url="http://127.0.0.1:1", api_key="k"))
    try:
        with pytest.raises(TypeError, match="did you mean 'read_timeout'"):
            client.with_options(read_timeuot=1.0)
    finally:
        client.close()


def test_plugin_settings_typo_lists_valid_fields() -> None:
    with pytest.raises(TypeError) as caught:
        resolve_settings(None, {"tennant": "acme"}, denial_error=rc.BudgetExceededError)
    text = str(caught.value)
    assert text.startswith("CyclesSettings got unknown field 'tennant' (did you mean 'tenant'?)")
    assert "tool_budgets" in text and "estimate" in text
    assert CyclesSettings(tenant="acme").tenant == "acme"


def test_missing_extra_names_the_install_command() -> None:
    with (
        pytest.raises(MissingExtraError) as caught,
        needs_extra("Thing", "runcycles-x[extra]", "no_such_pkg_xyz"),
    ):
        import no_such_pkg_xyz.sub  # type: ignore[import-not-found]  # noqa: F401
    assert isinstance(caught.value, ImportError)
    assert str(caught.value) == (
        "Thing needs the 'no_such_pkg_xyz' package, which is not installed; "
        "install it with: pip install 'runcycles-x[extra]'"
    )


def test_missing_extra_leaves_unrelated_import_errors_alone() -> None:
    with (
        pytest.raises(ModuleNotFoundError) as caught,
        needs_extra("Thing", "runcycles-x[extra]", "langchain"),
    ):
        import no_such_pkg_xyz  # type: ignore[import-not-found]  # noqa: F401
    assert not isinstance(caught.value, MissingExtraError)
