"""runcycles-demo: the runaway-agent demo.

``runcycles-demo`` (or ``python -m runcycles_demo``) runs the same looping LangChain agent on a
simulated gpt-4o three times against a local runcycles server: unguarded until a wall-clock cap,
guarded by a budget through :mod:`runcycles_langchain`, and as several agents sharing that budget;
then it checks every guarded run against the server's ledger.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (:func:`runcycles_demo.cli.main`); 130 on Ctrl-C, also during start-up."""
    try:
        # LangChain takes seconds to import: a Ctrl-C then must not print a traceback either.
        from .cli import main as run
    except KeyboardInterrupt:
        return 130
    return run(argv)
