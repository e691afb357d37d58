"""The shared plugin contract suite, three ways: ``agent.run``, ``agent.run_sync`` and agent
iteration (``agent.iter`` with streamed nodes); every adapter streams through ``run_stream``."""

from __future__ import annotations

from runcycles_testing import ContractSuite

from .adapters import IterAdapter, RunAdapter, SyncAdapter


class TestRunContract(ContractSuite):
    adapter = RunAdapter()


class TestSyncContract(ContractSuite):
    adapter = SyncAdapter()


class TestIterContract(ContractSuite):
    adapter = IterAdapter()
