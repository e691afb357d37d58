"""Runtime budget enforcement for LlamaIndex."""
