"""The README's Python examples pass ``mypy --strict``: a copied example must not need fixes.

A block preceded by ``<!-- no-typecheck -->`` is skipped (none is, today).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(<!--\s*no-typecheck\s*-->\s*\n)?```python\n(.*?)```", re.DOTALL)


def python_blocks(text: str) -> list[str]:
    """The README's ```python blocks, without those marked not-typecheckable."""
    return [m.group(2) for m in _BLOCK.finditer(text) if m.group(1) is None]


def test_block_extraction_honours_the_marker() -> None:
    text = "```python\na = 1\n```\n<!-- no-typecheck -->\n```python\nb: int = 'x'\n```\n"
    assert python_blocks(text) == ["a = 1\n"]


def _mypy(paths: list[Path], cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", f"--cache-dir={cache}", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_core_readme_python_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2  # the decorator and client quickstarts at least
    paths = []
    for i, code in enumerate(blocks):
        path = tmp_path / f"readme_block_{i}.py"
        path.write_text(code, encoding="utf-8")
        paths.append(path)
    # A deliberately wrong file proves mypy runs strictly and reports errors here.
    bad = tmp_path / "known_bad.py"
    bad.write_text("def f(x):\n    return x\n", encoding="utf-8")
    result = _mypy([*paths, bad], tmp_path / ".mypy_cache")
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert any(line.startswith(str(bad)) for line in errors), result.stdout + result.stderr
    readme_errors = [line for line in errors if not line.startswith(str(bad))]
    assert readme_errors == [], "\n".join(readme_errors)
