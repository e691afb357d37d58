"""Offline input-token counting for estimates.

Estimates must never touch the network, so this module only uses a real tokenizer when one can
run fully offline:

* ``tiktoken`` counts only when it is importable **and** the BPE file for the encoding is already
  in its local cache (tiktoken downloads the file on first use, so "importable" is not enough).
* Otherwise a documented approximation is used: one token per 4 ASCII characters (rounded up),
  plus one token per non-ASCII character. Non-ASCII text (CJK, emoji, accented scripts) tokenizes
  far denser than English, so counting each such character as a whole token keeps the
  approximation on the high side rather than under-reserving.

Chat messages add :data:`MESSAGE_OVERHEAD_TOKENS` per message (role and separators) plus
:data:`REPLY_PRIMING_TOKENS` once (the assistant header the provider inserts).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "APPROX_CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "TokenCounter",
    "approximate_tokens",
    "count_message_tokens",
    "default_token_counter",
]

TokenCounter = Callable[[str], int]
"""Counts the tokens of one string. Must not do network I/O."""

APPROX_CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3

# tiktoken's published location for the o200k encoding; tiktoken names its cache file after the
# sha1 of this URL, which is how we can tell whether counting would need a download.
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def approximate_tokens(text: str) -> int:
    """Approximate token count: ceil(ascii_chars / 4) + one token per non-ASCII character."""
    # Encoding with errors="ignore" drops every non-ASCII character: the ASCII count at C
    # speed (estimates count whole prompts, which run to tens of thousands of characters).
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / APPROX_CHARS_PER_TOKEN) + (len(text) - ascii_chars)


def _tiktoken_cache_dir() -> Path:
    # Mirrors tiktoken.load.read_file_cached's lookup order.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return Path(os.environ["DATA_GYM_CACHE_DIR"])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _offline_tiktoken() -> TokenCounter | None:
    try:
        if importlib.util.find_spec("tiktoken") is None:
            return None
    except (ImportError, ValueError):
        return None
    cached = _tiktoken_cache_dir() / hashlib.sha1(_O200K_URL.encode()).hexdigest()
    if not cached.is_file():
        return None
    try:
        import tiktoken  # type: ignore[import-not-found,unused-ignore]

        encoding: Any = tiktoken.get_encoding("o200k_base")
    except Exception:  # a broken cache or tiktoken build must not break estimation
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count


_default: TokenCounter | None = None


def default_token_counter() -> TokenCounter:
    """The offline tiktoken counter if its data is cached locally, else :func:`approximate_tokens`.

    Decided once per process.
    """
    global _default
    if _default is None:
        _default = _offline_tiktoken() or approximate_tokens
    return _default


def _strings(value: object) -> Iterable[str]:
    # Every string leaf counts (role, name, text parts, tool-call arguments): over-counting a few
    # structural strings is cheaper than under-reserving.
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif callable(getattr(value, "model_dump", None)):  # pydantic message objects (provider SDKs)
        yield from _strings(value.model_dump())  # type: ignore[attr-defined]


def count_message_tokens(messages: Iterable[object], counter: TokenCounter) -> int:
    """Tokens for a chat request: every string in every message, plus per-message overhead."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        total += sum(counter(text) for text in _strings(message))
    return total
