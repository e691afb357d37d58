"""Runtime budgets for AutoGen."""
