"""The admin CLI speaks amounts people type and read: ``budget set`` takes ``$1.50`` /
``1.50 USD`` or an integer in the unit; ``balances`` shows dollars beside the raw units."""

from __future__ import annotations

import uuid

import pytest

from runcycles_server_lite.cli import main
from runcycles_server_lite.testing import ServerHandle


def _run(server: ServerHandle, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main([*args, "--url", server.base_url, "--admin-key", server.admin_api_key])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _tenant(server: ServerHandle, capsys: pytest.CaptureFixture[str]) -> str:
    name = f"cli-amt-{uuid.uuid4().hex[:8]}"
    assert _run(server, capsys, "tenant", "create", name)[0] == 0
    return name


def test_budget_set_accepts_dollars_and_balances_show_them(
    server: ServerHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    t = _tenant(server, capsys)
    code, out = _run(server, capsys, "budget", "set", f"tenant:{t}", "$1.50")
    assert code == 0, out
    assert f"created tenant:{t} USD_MICROCENTS: allocated 150,000,000 ($1.50)" in out
    code, out = _run(server, capsys, "budget", "set", f"tenant:{t}", "2.25 USD")
    assert code == 0, out
    assert "allocated 150,000,000 -> 225,000,000 ($2.25), remaining 225,000,000 ($2.25)" in out
    code, out = _run(server, capsys, "budget", "set", f"tenant:{t}/agent:bot", "50000000")
    assert code == 0, out
    assert "allocated 50,000,000 ($0.50)" in out
    code, out = _run(server, capsys, "budget", "set", f"tenant:{t}", "1,200", "--unit", "TOKENS")
    assert code == 0, out
    assert "allocated 1,200\n" in out  # no dollars for tokens

    code, out = _run(server, capsys, "balances", t)
    assert code == 0, out
    assert "remaining $" in out
    rows = {line.split()[1]: line for line in out.splitlines() if f"tenant:{t}" in line}
    assert "225,000,000" in rows[f"tenant:{t}"] and "$2.25" in rows[f"tenant:{t}"]
    assert "$0.50" in rows[f"tenant:{t}/agent:bot"]


@pytest.mark.parametrize(
    ("amount", "unit", "message"),
    [
        ("$1.50", "TOKENS", "is in dollars, but the unit is TOKENS"),
        ("lots", "USD_MICROCENTS", "not an amount"),
        ("-$1", "USD_MICROCENTS", "cannot be negative"),
        (".50", "USD_MICROCENTS", "quote dollar amounts for the shell"),
    ],
)
def test_budget_set_rejects_amounts_it_cannot_read(
    server: ServerHandle, capsys: pytest.CaptureFixture[str], amount: str, unit: str, message: str
) -> None:
    t = _tenant(server, capsys)
    # "--" so that "-$1" reaches the command as the amount, not as an option.
    args = ["budget", "set", "--unit", unit, "--url", server.base_url]
    code = main([*args, "--admin-key", server.admin_api_key, "--", f"tenant:{t}", amount])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code == 1
    assert message in out
