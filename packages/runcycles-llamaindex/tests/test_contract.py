"""The shared plugin contract suite, three ways: a FunctionAgent run, and LlamaIndex's
lower-level tool calling through the async and the sync LLM API."""

from __future__ import annotations

from runcycles_testing import ContractSuite

from .adapters import AgentAdapter, LLMAsyncAdapter, LLMSyncAdapter


class TestAgentContract(ContractSuite):
    adapter = AgentAdapter()


class TestLLMAsyncContract(ContractSuite):
    adapter = LLMAsyncAdapter()


class TestLLMSyncContract(ContractSuite):
    adapter = LLMSyncAdapter()
