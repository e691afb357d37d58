"""runcycles-demo: the runaway-agent demo.

``runcycles-demo`` (or ``python -m runcycles_demo``) runs the same looping LangChain agent on a
simulated gpt-4o three times against a local runcycles server: unguarded until a wall-clock cap,
guarded by a budget through :mod:`runcycles_langchain`, and as several agents sharing that budget;
then it checks every guarded run against the server's ledger.
"""

from .cli import main

__all__ = ["main"]
