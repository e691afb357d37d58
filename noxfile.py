"""Task runner for the runcycles monorepo.

``python -m nox`` runs lint, type checks and every package's tests, side by side (what CI runs).
``python -m nox -s serve`` starts server-lite on the embedded store.
``python -m nox -s demo`` runs the runaway-agent demo.
``python -m nox -s bench`` runs the benchmarks (not part of the default run).
``python -m nox -s conformance`` checks the server and client against the upstream spec.
``python -m nox -s chaos`` injects faults (kill -9, store outages) and checks the ledger.
``python -m nox -s browser`` drives the dashboard in headless Chromium (Debian's chromium).
``python -m nox -s lock`` refreshes the committed version locks under ``locks/``.

Every session installs with uv into its own virtualenv under ``.nox/``, from one of the install
sets in :data:`ENVS`, constrained to the exact versions in ``locks/<env>.txt``; a session whose
virtualenv ends up with anything the lock does not pin fails. Upstream releases therefore reach
CI only through a reviewed ``nox -s lock`` commit. Sessions use the interpreter nox itself runs
on, so a machine with one Python needs nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
# Independent sessions run side by side, each in its own nox subprocess with its output printed
# as a block when it finishes: a session spends much of its time waiting on the servers and
# Redis its tests start, so even two CPUs finish far sooner than one session at a time.
# `python3 -m nox -j 1` runs them one by one. Longest first, so the run ends when they all do.
nox.options.parallel = "auto"
nox.options.allow_parallel = True
nox.options.sessions = [
    "server",
    "core",
    "crewai(latest)",
    "crewai(oldest)",
    "openai_agents(oldest)",
    "openai_agents(latest)",
    "llamaindex(oldest)",
    "llamaindex(latest)",
    "pydantic_ai(latest)",
    "pydantic_ai(oldest)",
    "autogen(oldest)",
    "autogen(latest)",
    "demo_tests",
    "chaos",
    "langchain(latest)",
    "langchain(oldest)",
    "e2e",
    "testing",
    "typecheck",
    "lint",
]

ROOT = Path(__file__).resolve().parent
LOCKS = ROOT / "locks"
# The oldest Python the packages support: locks are resolved for every Python from here on
# (uv's universal resolution), so one lock serves 3.10 to the newest.
LOCK_PYTHON = "3.10"

CORE = "packages/runcycles-core"
SERVER = "packages/runcycles-server-lite"
TESTING = "packages/runcycles-testing"
LANGCHAIN = "packages/runcycles-langchain"
OPENAI_AGENTS = "packages/runcycles-openai-agents"
LLAMAINDEX = "packages/runcycles-llamaindex"
CREWAI = "packages/runcycles-crewai"
PYDANTIC_AI = "packages/runcycles-pydantic-ai"
AUTOGEN = "packages/runcycles-autogen"
DEMO = "packages/runcycles-demo"

MYPY = "mypy>=1.13,<2"

# Typed packages checked with mypy --strict.
TYPED = {
    "runcycles_core": f"{CORE}/src/runcycles_core",
    "runcycles_server_lite": f"{SERVER}/src/runcycles_server_lite",
    "runcycles_testing": f"{TESTING}/src/runcycles_testing",
}


def _supported(package: str, module: str) -> dict[str, str]:
    """A plugin's declared framework range (its stdlib-only ``_supported.py``)."""
    found: dict[str, str] = runpy.run_path(f"{package}/src/{module}/_supported.py")
    return found


_LC = _supported(LANGCHAIN, "runcycles_langchain")
_OA = _supported(OPENAI_AGENTS, "runcycles_openai_agents")
_LI = _supported(LLAMAINDEX, "runcycles_llamaindex")
_CR = _supported(CREWAI, "runcycles_crewai")
_PA = _supported(PYDANTIC_AI, "runcycles_pydantic_ai")
_AG = _supported(AUTOGEN, "runcycles_autogen")


def _editable(*paths: str) -> list[str]:
    return [f"-e ./{p}" for p in paths]


# Install sets, one per lock. A session installs a subset of its env's set (never anything
# else) with the env's lock as constraints; `nox -s lock` resolves each whole set.
ENVS: dict[str, list[str]] = {
    "lint": ["ruff>=0.8,<1"],
    "base": [MYPY, *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING)],
    "langchain-oldest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{LANGCHAIN}[test]"),
        # The floor, and the langgraph releases that shipped with langchain 1.0.0 (newer
        # langgraph-checkpoint needs a newer langchain-core than it declares).
        f"{_LC['FRAMEWORK']}=={_LC['OLDEST']}",
        f"{_LC['AGENTS_FRAMEWORK']}=={_LC['AGENTS_OLDEST']}",
        "langgraph==1.0.0",
        "langgraph-prebuilt==1.0.0",
        "langgraph-checkpoint<3",
    ],
    "langchain-latest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{LANGCHAIN}[test]"),
    ],
    "openai-agents-oldest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{OPENAI_AGENTS}[test]"),
        f"{_OA['FRAMEWORK']}=={_OA['OLDEST']}",
    ],
    "openai-agents-latest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{OPENAI_AGENTS}[test]"),
    ],
    "llamaindex-oldest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{LLAMAINDEX}[test]"),
        f"{_LI['FRAMEWORK']}=={_LI['OLDEST']}",
        # The oldest agent-workflow engine that floor allows (its runs deliver our denial).
        "llama-index-workflows==2.0.0",
    ],
    "llamaindex-latest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{LLAMAINDEX}[test]"),
    ],
    # crewai needs openai < 3 and openai-agents openai >= 3: they can never share a venv.
    "crewai-oldest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{CREWAI}[test]"),
        f"{_CR['FRAMEWORK']}=={_CR['OLDEST']}",
    ],
    "crewai-latest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{CREWAI}[test]"),
    ],
    "pydantic-ai-oldest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{PYDANTIC_AI}[test]"),
        f"{_PA['FRAMEWORK']}=={_PA['OLDEST']}",
    ],
    # The newest releases need Python >= 3.11: the lock resolves them there (and the newest
    # 3.10 can install, 2.54.x, below it; the session skips on 3.10). No spaces: one argument.
    "pydantic-ai-latest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{PYDANTIC_AI}[test]"),
        f"{_PA['FRAMEWORK']}>=2.55;python_version>='{_PA['LATEST_PYTHON']}'",
    ],
    "autogen-oldest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{AUTOGEN}[test]"),
        f"{_AG['FRAMEWORK']}=={_AG['OLDEST']}",
        f"{_AG['CORE_FRAMEWORK']}=={_AG['OLDEST']}",
    ],
    "autogen-latest": [
        MYPY,
        *_editable(f"{CORE}[test]", f"{SERVER}[test]", TESTING, f"{AUTOGEN}[test]"),
    ],
    "demo": [
        MYPY,
        *_editable(CORE, SERVER, LANGCHAIN, f"{DEMO}[test]"),
    ],
    "bench": [*_editable(CORE, SERVER), "-r bench/requirements.txt"],
    # The dashboard in a real browser: Debian's chromium and chromedriver, driven by selenium.
    "browser": [
        *_editable(f"{CORE}[test]", f"{SERVER}[test]"),
        "selenium>=4.20,<5",
    ],
    "conformance": [
        *_editable(f"{CORE}[test]", f"{SERVER}[test]"),
        "schemathesis>=4.3,<5",
        "jsonschema>=4.23,<5",
    ],
    # Fault injection (chaos/): the server's console script, its redis-server, httpx clients.
    "chaos": [*_editable(f"{CORE}[test]", f"{SERVER}[test]")],
}

# Distributions built from this checkout: never pinned in a lock.
LOCAL = sorted(
    {
        re.sub(r"[-_.]+", "-", p.parent.name).lower()
        for p in (ROOT / "packages").glob("*/pyproject.toml")
    }
)


def _uv() -> str:
    try:
        import uv  # installed beside nox by `nox[uv]`

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return "uv"


def _install(session: nox.Session, env: str, *lines: str) -> None:
    """Install ``lines`` (entries of ``ENVS[env]``; none: all of them) with the env's lock as
    constraints, then fail if the virtualenv holds anything the lock does not pin."""
    lock = LOCKS / f"{env}.txt"
    if not lock.exists():
        session.error(f"{lock.relative_to(ROOT)} is missing: run `python3 -m nox -s lock -- {env}`")
    stray = [line for line in lines if line not in ENVS[env]]
    if stray:
        session.error(f"not in ENVS[{env!r}], so not locked: {', '.join(stray)}")
    args = [part for line in (lines or ENVS[env]) for part in line.split(" ", 1)]
    session.install("-c", str(lock), *args)
    _check_pinned(session, lock)


def _pins(lock: Path) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match:
            name = re.sub(r"[-_.]+", "-", match[1]).lower()
            pins.setdefault(name, set()).add(match[2])
    return pins


def _check_pinned(session: nox.Session, lock: Path) -> None:
    """Every installed distribution is one this checkout builds or one the lock pins, at a
    pinned version: the proof that nothing was resolved from the index unpinned."""
    out = subprocess.run(
        [_uv(), "pip", "freeze", "--python", str(Path(session.bin) / "python")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins = _pins(lock)
    wrong = []
    for line in out.splitlines():
        if not line or line.startswith("-e ") or " @ " in line:
            continue  # editable or direct references: this checkout's own packages
        name, _, version = line.partition("==")
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in LOCAL:
            continue
        if version not in pins.get(key, set()):
            wrong.append(f"{line} (lock: {', '.join(sorted(pins.get(key, ()))) or 'absent'})")
    if wrong:
        session.error(f"installed but not as pinned in {lock.name}: " + "; ".join(wrong))


def _leftovers(token: str) -> list[tuple[int, str]]:
    """Processes still alive whose environment carries ``token`` (Linux /proc)."""
    found = []
    needle = f"RUNCYCLES_NOX_RUN={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), cmd.strip()[:160]))
        except OSError:
            continue  # gone, or not ours to read
    return found


def _pytest(session: nox.Session, *paths: str) -> None:
    """pytest, then fail the session if any process it started is still alive.

    pytest exits 5 when it collects nothing; nox treats any non-zero exit as a failure, so an
    empty run can never pass silently. Every process started under pytest inherits a marker
    in its environment; survivors are listed, killed and make the session fail.
    """
    token = uuid.uuid4().hex
    try:
        session.run("pytest", *paths, *session.posargs, env={"RUNCYCLES_NOX_RUN": token})
    finally:
        if sys.platform.startswith("linux"):
            survivors = _leftovers(token)
            if survivors:
                time.sleep(2)  # a teardown may still be finishing
                survivors = _leftovers(token)
            for pid, _ in survivors:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if survivors:
                listed = "; ".join(f"{pid}: {cmd}" for pid, cmd in survivors)
                session.error(f"processes left running by the tests (killed): {listed}")


def _mypy(session: nox.Session, *paths: str, framework: bool = False) -> None:
    """mypy with a cache per venv: sessions type-check against different framework versions,
    and other sessions may run mypy on the same tree at the same time.

    ``framework``: check against the running Python rather than the oldest supported one. A
    framework's newest release may need a newer Python than 3.10 (langchain-core 1.8 does) and
    use typing features that only exist there, so checking it as 3.10 code reports errors that
    no supported install can have (on 3.10 the lock resolves an older release).
    """
    args = [f"--cache-dir={session.virtualenv.location}/.mypy_cache"]
    if framework:
        args.append(f"--python-version={sys.version_info.major}.{sys.version_info.minor}")
    session.run("mypy", *args, *paths)


def _mypy_latest(session: nox.Session, bound: str, *paths: str) -> None:
    """mypy on a plugin against its framework's newest release only.

    The newest stubs are what users type-check against; the floor's differ in details that do
    not matter at run time, and the floor column's tests already prove the plugin runs there.
    A cold mypy run over a framework's dependency tree costs up to a minute (crewai: 64 s,
    warm 1.3 s), and CI starts cold, so checking both columns doubled that for nothing.
    """
    if bound == "latest":
        _mypy(session, *paths, framework=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on core, server-lite and the contract suite."""
    _install(session, "base")
    _mypy(session, *TYPED.values())


@nox.session
def server(session: nox.Session) -> None:
    """server-lite tests against a real Redis (embedded, or REDIS_URL) over real HTTP."""
    # server-lite depends on runcycles-core (shared amount formatting): install it from here.
    _install(session, "base", f"-e ./{CORE}[test]", f"-e ./{SERVER}[test]")
    _pytest(session, f"{SERVER}/tests")


@nox.session
def core(session: nox.Session) -> None:
    """runcycles-core tests: wire-level unit tests plus end-to-end against server-lite."""
    # mypy: the README's examples are type-checked (tests/test_readme_types.py).
    _install(session, "base", MYPY, f"-e ./{CORE}[test]", f"-e ./{SERVER}[test]")
    _pytest(session, f"{CORE}/tests")


@nox.session
def testing(session: nox.Session) -> None:
    """The shared plugin contract suite, run against its framework-free reference plugin."""
    _install(session, "base", *ENVS["base"][1:])
    _pytest(session, f"{TESTING}/tests")


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def openai_agents(session: nox.Session, bound: str) -> None:
    """runcycles-openai-agents on both ends of its supported openai-agents range.

    Its own venv: openai-agents needs openai >= 3, which other frameworks' plugins cannot share.
    """
    env = f"openai-agents-{bound}"
    _install(session, env)
    _mypy_latest(
        session,
        bound,
        f"{OPENAI_AGENTS}/src/runcycles_openai_agents",
        f"{OPENAI_AGENTS}/tests",
    )
    _pytest(session, f"{OPENAI_AGENTS}/tests")


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def crewai(session: nox.Session, bound: str) -> None:
    """runcycles-crewai on both ends of its supported crewai range.

    Its own venv: crewai needs openai < 3, which openai-agents cannot share. CrewAI's telemetry
    and tracing stay off.
    """
    env = f"crewai-{bound}"
    _install(session, env)
    session.env.update(
        CREWAI_DISABLE_TELEMETRY="true",
        CREWAI_DISABLE_TRACKING="true",
        CREWAI_TRACING_ENABLED="false",
        OTEL_SDK_DISABLED="true",
        # crewai writes its storage under the user's data dir: keep it inside the venv.
        CREWAI_STORAGE_DIR=f"{session.virtualenv.location}/crewai-storage",
    )
    _mypy_latest(session, bound, f"{CREWAI}/src/runcycles_crewai", f"{CREWAI}/tests")
    _pytest(session, f"{CREWAI}/tests")


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def langchain(session: nox.Session, bound: str) -> None:
    """runcycles-langchain on both ends of its supported LangChain range (its own venv)."""
    env = f"langchain-{bound}"
    _install(session, env)
    _mypy_latest(session, bound, f"{LANGCHAIN}/src/runcycles_langchain", f"{LANGCHAIN}/tests")
    _pytest(session, f"{LANGCHAIN}/tests")


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def llamaindex(session: nox.Session, bound: str) -> None:
    """runcycles-llamaindex on both ends of its supported llama-index-core range.

    Its own venv: llama-index-core brings nltk, numpy and its workflow packages.
    """
    env = f"llamaindex-{bound}"
    _install(session, env)
    _mypy_latest(session, bound, f"{LLAMAINDEX}/src/runcycles_llamaindex", f"{LLAMAINDEX}/tests")
    _pytest(session, f"{LLAMAINDEX}/tests")


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def pydantic_ai(session: nox.Session, bound: str) -> None:
    """runcycles-pydantic-ai on both ends of its supported pydantic-ai-slim range.

    Its own venv. The newest releases need a newer Python than the oldest the project supports:
    on an older interpreter ``latest`` skips, saying which Python it needs.
    """
    need = tuple(int(p) for p in _PA["LATEST_PYTHON"].split("."))
    if bound == "latest" and sys.version_info[:2] < need:
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        session.skip(
            f"pydantic-ai(latest) tests the newest pydantic-ai-slim, which needs Python >= "
            f"{_PA['LATEST_PYTHON']} (nox runs on {running})"
        )
    _install(session, f"pydantic-ai-{bound}")
    _mypy_latest(session, bound, f"{PYDANTIC_AI}/src/runcycles_pydantic_ai", f"{PYDANTIC_AI}/tests")
    _pytest(session, f"{PYDANTIC_AI}/tests")


@nox.session
@nox.parametrize("bound", ["oldest", "latest"], ids=["oldest", "latest"])
def autogen(session: nox.Session, bound: str) -> None:
    """runcycles-autogen on both ends of its supported autogen-agentchat / autogen-core range.

    Its own venv: autogen-core pins protobuf ~=5.29.
    """
    env = f"autogen-{bound}"
    _install(session, env)
    _mypy_latest(session, bound, f"{AUTOGEN}/src/runcycles_autogen", f"{AUTOGEN}/tests")
    _pytest(session, f"{AUTOGEN}/tests")


@nox.session
def demo(session: nox.Session) -> None:
    """The runaway-agent demo, the README's first command.

    Extra args go to ``runcycles-demo``, e.g. ``-- --duration 10 --budget 0.50 --no-live``.
    """
    _install(session, "demo")
    session.run("runcycles-demo", *session.posargs)


@nox.session
def demo_tests(session: nox.Session) -> None:
    """The demo's tests: its console script in a short mode, ledger-checked; mypy on it."""
    _install(session, "demo")
    _mypy(session, f"{DEMO}/src/runcycles_demo", f"{DEMO}/tests", framework=True)
    _pytest(session, f"{DEMO}/tests")


@nox.session
def e2e(session: nox.Session) -> None:
    """Cross-package end-to-end tests (tests/): README quickstarts against the real CLI."""
    _install(session, "base", *ENVS["base"][1:])
    _pytest(session, "tests")


@nox.session
def conformance(session: nox.Session) -> None:
    """The project's contract, client and live server against the upstream Cycles spec.

    Not in the default run; .ci/run calls it. Contract parity, core's models, schemathesis
    over both specs, the client-recovery runner. conformance/upstream.py says where the spec
    folder is looked for (an environment variable, with a default beside the clone).
    """
    _install(session, "conformance")
    _pytest(session, "conformance")


@nox.session
def chaos(session: nox.Session) -> None:
    """Fault injection against the real server: kill -9 of the server and of its store, a
    proxy dropping or stalling the store's connections, retry storms, a crashed client's
    reservations swept; the ledger checked after each fault, a table printed at the end.

    Part of the default run (it needs only the clone, and mostly waits on restarts and
    expiries, so it costs little beside the others). ``-- --large`` runs larger counts.
    """
    _install(session, "chaos")
    _pytest(session, "chaos")


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@nox.session
def browser(session: nox.Session) -> None:
    """The dashboard in headless Chromium: sign in through the form, read the dollar
    figures, click fund, watch the live refresh (selenium; Debian's chromium and chromedriver).

    Not in the default run; .ci/run calls it. Screenshots go to ``.nox/browser-screenshots/``.
    """
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        session.error(
            f"{' and '.join(missing)} not found: install them with "
            "`apt-get install -y chromium chromium-driver`"
        )
    _install(session, "browser")
    session.env["RUNCYCLES_SCREENSHOTS"] = str(ROOT / ".nox" / "browser-screenshots")
    # Selenium never downloads a driver here (the test names Debian's), nor reports usage.
    session.env["SE_AVOID_STATS"] = "true"
    _pytest(session, f"{SERVER}/tests_browser")


@nox.session
def serve(session: nox.Session) -> None:
    """Start server-lite on the embedded store (extra args go to the server CLI)."""
    _install(session, "base", f"-e ./{CORE}[test]", f"-e ./{SERVER}[test]")
    session.run("runcycles-server-lite", *session.posargs)


@nox.session(allow_parallel=False)  # timings need the machine to themselves
def bench(session: nox.Session) -> None:
    """Benchmarks: server throughput and latency, client overhead, memory.

    Not in the default run. Extra args go to ``python -m bench.run``, e.g. ``-- --quick`` or
    ``-- --profile``.
    """
    _install(session, "bench")
    session.run("python", "-m", "bench.run", *session.posargs)


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Resolve the install sets in ENVS to exact versions, written to ``locks/<env>.txt``.

    Every set, or those named (``-- langchain-latest``), for every supported Python; also
    ``locks/nox.txt``, the pinned nox and uv that the README's commands install. Review the
    diff, run the sessions, commit: that is how an upstream release reaches CI.
    """
    names = session.posargs or [*ENVS, "nox"]
    unknown = [n for n in names if n not in ENVS and n != "nox"]
    if unknown:
        session.error(f"unknown env(s) {', '.join(unknown)}; known: {', '.join([*ENVS, 'nox'])}")
    LOCKS.mkdir(exist_ok=True)
    for name in names:
        lines = ["nox[uv]>=2025.2.9"] if name == "nox" else ENVS[name]
        command = [_uv(), "pip", "compile", "-", "--universal", "--python-version", LOCK_PYTHON]
        command += ["--quiet", "--custom-compile-command", f"python3 -m nox -s lock -- {name}"]
        command += [f"--no-emit-package={p}" for p in LOCAL]
        command += ["-o", str(LOCKS / f"{name}.txt")]
        session.log(f"{name}: {json.dumps(lines)}")
        subprocess.run(command, input="\n".join(lines) + "\n", text=True, check=True, cwd=ROOT)
