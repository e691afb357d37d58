"""The README quickstart runs as written: its shell block against the real server-lite console
script (embedded store, fresh data dir, free port), then its Python block against that server."""

from __future__ import annotations

from pathlib import Path

import httpx

from runcycles_testing.readme import quickstart, readme_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks(README)
    assert set(blocks) == {"shell", "python"}, "README lost its quickstart markers"
    # A stand-in LLM is part of the block: CrewAI ships no offline model.
    assert len(blocks["python"].strip().splitlines()) <= 9
    with quickstart(README, tmp_path, drop_env=("CYCLES_", "OPENAI_")) as q:
        run = q.run(extra_shell=f"printenv CYCLES_API_KEY > {tmp_path / 'key'}")
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.strip().splitlines()[-1] == "42"
        # The call was reserved and committed: spent > 0, nothing left held.
        key = (tmp_path / "key").read_text().strip()
        reply = httpx.get(
            f"{q.base_url}/v1/balances",
            params={"tenant": "acme"},
            headers={"X-Cycles-API-Key": key},
        )
        assert reply.status_code == 200, reply.text
        (acme,) = [b for b in reply.json()["balances"] if b["scope"] == "tenant:acme"]
        assert acme["spent"]["amount"] > 0
        assert acme.get("reserved", {"amount": 0})["amount"] == 0
