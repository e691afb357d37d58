"""The exact decimal helpers of scripts/lib.lua, checked against Python ints inside real Redis."""

from __future__ import annotations

from importlib import resources
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LIB = (resources.files("runcycles_server_lite") / "scripts" / "lib.lua").read_text()
PROBE = (
    LIB
    + """
local out = {}
for i = 1, #ARGV, 2 do
  local x, y = ARGV[i], ARGV[i + 1]
  out[#out + 1] = dadd(x, y)
  out[#out + 1] = dsub(x, y)
  out[#out + 1] = tostring(dcmp(x, y))
  out[#out + 1] = fits64(dadd(x, y)) and "1" or "0"
  out[#out + 1] = dnorm(x)
end
return out
"""
)

amounts = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(-(10**15), 10**15),
    st.sampled_from([0, 1, -1, 10**15 - 1, 10**15, INT64_MAX, INT64_MIN, 2**53, 2**53 + 1]),
)


def _run(server: ServerHandle, pairs: list[tuple[str, str]]) -> list[str]:
    async def go(store: Store) -> list[str]:
        args: list[Any] = [v for pair in pairs for v in pair]
        result: list[str] = await store.redis.eval(PROBE, 0, *args)
        return result

    return server.run_store(go)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(amounts, amounts), min_size=1, max_size=40))
def test_decimal_arithmetic_is_exact(server: ServerHandle, pairs: list[tuple[int, int]]) -> None:
    out = _run(server, [(str(x), str(y)) for x, y in pairs])
    for i, (x, y) in enumerate(pairs):
        add, sub, cmp, fits, norm = out[5 * i : 5 * i + 5]
        assert int(add) == x + y
        assert int(sub) == x - y
        assert int(cmp) == (x > y) - (x < y)
        assert fits == ("1" if INT64_MIN <= x + y <= INT64_MAX else "0")
        assert norm == str(x)


def test_normalisation_of_odd_spellings(server: ServerHandle) -> None:
    out = _run(server, [("007", "0"), ("-0", "0"), ("-000000000000000000012", "3")])
    assert out[4] == "7"
    assert out[9] == "0"
    assert out[14] == "-12"
    assert out[10] == "-9"
