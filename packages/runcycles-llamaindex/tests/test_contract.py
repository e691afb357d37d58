"""The shared plugin contract suite on a FunctionAgent run through the callback handler."""

from __future__ import annotations

from runcycles_testing import ContractSuite

from .adapters import AgentAdapter


class TestAgentContract(ContractSuite):
    adapter = AgentAdapter()
