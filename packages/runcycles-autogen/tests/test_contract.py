"""The shared plugin contract suite, two ways: one AssistantAgent, and the same agent inside a
RoundRobinGroupChat (where AutoGen turns errors into RuntimeError and run_team restores them)."""

from __future__ import annotations

from runcycles_testing import ContractSuite

from .adapters import AgentAdapter, TeamAdapter


class TestAgentContract(ContractSuite):
    adapter = AgentAdapter()


class TestTeamContract(ContractSuite):
    adapter = TeamAdapter()
