"""The supported LangChain range, declared once.

Read by the package metadata check in the tests and by ``noxfile.py`` (which installs
``OLDEST`` for the ``langchain(oldest)`` session and the newest that resolves for ``latest``).
``REQUIREMENT`` must equal the ``langchain-core`` entry of ``pyproject.toml`` (a test checks it).
"""

FRAMEWORK = "langchain-core"
OLDEST = "1.0.0"
BELOW = "2"
REQUIREMENT = f"{FRAMEWORK}>={OLDEST},<{BELOW}"

#: The v1 agents package, needed only for :class:`~runcycles_langchain.CyclesMiddleware`
#: (the ``agents`` extra).
AGENTS_FRAMEWORK = "langchain"
AGENTS_OLDEST = "1.0.0"
AGENTS_REQUIREMENT = "langchain>=1.0.0,<2"
