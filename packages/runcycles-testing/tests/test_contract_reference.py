"""The contract suite run against the reference plugin (tests the suite itself)."""

from __future__ import annotations

from runcycles_testing import ContractSuite

from .reference import ReferenceAdapter


class TestReferenceContract(ContractSuite):
    adapter = ReferenceAdapter()
