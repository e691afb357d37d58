"""Task runner for the runcycles monorepo.

``python -m nox`` runs lint, type checks and every package's tests (what CI runs).
``python -m nox -s serve`` starts server-lite on the embedded store.
``python -m nox -s demo`` runs the runaway-agent demo.
``python -m nox -s bench`` runs the benchmarks (not part of the default run).

Every session installs with uv into its own virtualenv under ``.nox/``. Sessions use the
interpreter nox itself runs on, so a machine with one Python needs nothing else.
"""

from __future__ import annotations

import runpy

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "server",
    "core",
    "testing",
    "e2e",
    "langchain(oldest)",
    "langchain(latest)",
    "openai_agents(oldest)",
    "openai_agents(latest)",
    "demo_tests",
]

CORE = "packages/runcycles-core"
SERVER = "packages/runcycles-server-lite"
TESTING = "packages/runcycles-testing"

# Typed packages checked with mypy --strict.
TYPED = {
    "runcycles_core": f"{CORE}/src/runcycles_core",
    "runcycles_server_lite": f"{SERVER}/src/runcycles_server_lite",
    "runcycles_testing": f"{TESTING}/src/runcycles_testing",
}


def _pytest(session: nox.Session, *paths: str) -> None:
    # pytest exits 5 when it collects nothing; nox treats any non-zero exit as a failure,
    # so an empty run can never pass silently.
    session.run("pytest", *paths, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff>=0.8,<1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on core and server-lite."""
    session.install("mypy>=1.13,<2", "-e", f"{CORE}[test]", "-e", f"{SERVER}[test]", "-e", TESTING)
    session.run("mypy", *TYPED.values())


@nox.session
def server(session: nox.Session) -> None:
    """server-lite tests against a real Redis (embedded, or REDIS_URL) over real HTTP."""
    session.install("-e", f"{SERVER}[test]")
    _pytest(session, f"{SERVER}/tests")


@nox.session
def core(session: nox.Session) -> None:
    """runcycles-core tests: wire-level unit tests plus end-to-end against server-lite."""
    session.install("-e", f"{CORE}[test]", "-e", f"{SERVER}[test]")
    _pytest(session, f"{CORE}/tests")


@nox.session
def testing(session: nox.Session) -> None:
    """The shared plugin contract suite, run against its framework-free reference plugin."""
    session.install("-e", CORE, "-e", SERVER, "-e", TESTING)
    _pytest(session, f"{TESTING}/tests")


OPENAI_AGENTS = "packages/runcycles-openai-agents"


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def openai_agents(session: nox.Session, bound: str) -> None:
    """runcycles-openai-agents on both ends of its supported openai-agents range (its own venv:
    openai-agents needs openai >= 3, which other frameworks' plugins cannot share)."""
    supported = runpy.run_path(f"{OPENAI_AGENTS}/src/runcycles_openai_agents/_supported.py")
    if bound == "oldest":
        framework = [f"{supported['FRAMEWORK']}=={supported['OLDEST']}"]
    else:
        framework = [supported["REQUIREMENT"], "--upgrade-package", supported["FRAMEWORK"]]
    session.install(
        "mypy>=1.13,<2",
        "-e",
        f"{CORE}[test]",
        "-e",
        f"{SERVER}[test]",
        "-e",
        TESTING,
        "-e",
        f"{OPENAI_AGENTS}[test]",
        *framework,
    )
    # A cache per venv: the two bounds type-check against different SDK versions.
    cache = f"--cache-dir={session.virtualenv.location}/.mypy_cache"
    session.run(
        "mypy", cache, f"{OPENAI_AGENTS}/src/runcycles_openai_agents", f"{OPENAI_AGENTS}/tests"
    )
    _pytest(session, f"{OPENAI_AGENTS}/tests")


LANGCHAIN = "packages/runcycles-langchain"


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def langchain(session: nox.Session, bound: str) -> None:
    """runcycles-langchain on both ends of its supported LangChain range (its own venv). The
    oldest end pins tests/requirements.oldest.txt; latest takes the newest that resolves."""
    install = ["-e", CORE, "-e", SERVER, "-e", TESTING, "-e", f"{LANGCHAIN}[test]"]
    if bound == "oldest":
        oldest = f"{LANGCHAIN}/tests/requirements.oldest.txt"
        session.install(*install, "-r", oldest)
    else:
        session.install("mypy>=1.13,<2", *install)
        session.install("--upgrade", "langchain-core", "langchain", "langgraph")
        # A private cache: other sessions may run mypy on the same tree at the same time.
        cache = f"{session.virtualenv.location}/.mypy_cache"
        paths = [f"{LANGCHAIN}/src/runcycles_langchain", f"{LANGCHAIN}/tests"]
        session.run("mypy", "--cache-dir", cache, *paths)
    _pytest(session, f"{LANGCHAIN}/tests")


DEMO = "packages/runcycles-demo"


@nox.session
def demo(session: nox.Session) -> None:
    """The runaway-agent demo, the README's first command (extra args go to ``runcycles-demo``,
    e.g. ``-- --duration 10 --budget 0.50 --no-live``)."""
    session.install("-e", CORE, "-e", SERVER, "-e", LANGCHAIN, "-e", DEMO)
    session.run("runcycles-demo", *session.posargs)


@nox.session
def demo_tests(session: nox.Session) -> None:
    """The demo's tests: its console script in a short mode, ledger-checked; mypy on it."""
    install = ["-e", CORE, "-e", SERVER, "-e", LANGCHAIN, "-e", f"{DEMO}[test]"]
    session.install("mypy>=1.13,<2", *install)
    cache = f"--cache-dir={session.virtualenv.location}/.mypy_cache"
    session.run("mypy", cache, f"{DEMO}/src/runcycles_demo", f"{DEMO}/tests")
    _pytest(session, f"{DEMO}/tests")


@nox.session
def e2e(session: nox.Session) -> None:
    """Cross-package end-to-end tests (tests/): README quickstarts against the real CLI."""
    session.install("-e", CORE, "-e", SERVER, "-e", TESTING)
    _pytest(session, "tests")


@nox.session
def conformance(session: nox.Session) -> None:
    """The project's contract and live server against the upstream Cycles spec (not in the
    default run): schema parity, schemathesis over both specs, the client-recovery runner.
    The spec folder comes from the environment; conformance/conftest.py says which variable."""
    session.install(
        "-e",
        f"{CORE}[test]",
        "-e",
        f"{SERVER}[test]",
        "schemathesis>=4.3,<5",
        "jsonschema>=4.23,<5",
    )
    _pytest(session, "conformance")


@nox.session
def serve(session: nox.Session) -> None:
    """Start server-lite on the embedded store (extra args go to the server CLI)."""
    session.install("-e", SERVER)
    session.run("runcycles-server-lite", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: server throughput and latency, client overhead, memory (not in the default
    run; extra args go to ``python -m bench.run``, e.g. ``-- --quick`` or ``-- --profile``)."""
    session.install("-e", CORE, "-e", SERVER, "-r", "bench/requirements.txt")
    session.run("python", "-m", "bench.run", *session.posargs)
