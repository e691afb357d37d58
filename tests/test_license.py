"""The Apache-2.0 LICENSE the pyprojects declare: the standard text at the repository root, and
a byte-identical copy in each package (sdists and wheels can only ship files from inside the
package's own directory)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
# SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt
APACHE_2_0 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_root_license_is_the_apache_2_0_text() -> None:
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_each_package_declares_and_ships_the_same_license(package: Path) -> None:
    # (tomllib is 3.11+; these two lines are all that matters here)
    pyproject = (package / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = "Apache-2.0"$', pyproject, flags=re.M)
    assert re.search(r'^license-files = \["LICENSE"\]', pyproject, flags=re.M)
    copy = package / "LICENSE"
    assert not copy.is_symlink(), "a symlink escapes the sdist: keep a copy"
    assert copy.read_bytes() == (ROOT / "LICENSE").read_bytes(), f"{copy} drifted from LICENSE"
