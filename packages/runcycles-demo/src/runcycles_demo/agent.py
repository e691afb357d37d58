"""The buggy support agent: a LangChain chain in a draft → evaluate → refine loop.

The loop stops when the evaluator scores a draft 8.0 or more, which the model never does, and
the agent resends its whole working conversation every time (trimmed only to the model's
practical context), so each call costs more than the one before. Nothing in it knows about
budgets: the demo runs the very same code with and without the runcycles callback handler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, trim_messages
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from runcycles_core.pricing import default_pricing

from .model import EVALUATE_MARKER, parse_score

__all__ = ["PASSING_SCORE", "TICKET", "SupportAgent"]

PASSING_SCORE = 8.0

SYSTEM = (
    "You are Ava, a support agent for Acme Cloud. Write accurate, friendly, concise replies to "
    "customers. Never promise refunds you cannot confirm. Always include the case number."
)

TICKET = (
    "Subject: Invoice INV-20931 is wrong\n\n"
    "Hi, our invoice this month shows $847.00 but our annual contract says $720.00 per month. "
    "We did not add anything to the plan. Can you fix this before our finance team closes the "
    "month on Friday? - Dana Whitfield, Finance Lead, Northwind Traders"
)

DRAFT = "Draft a reply to the customer's ticket."
EVALUATE = (
    f"{EVALUATE_MARKER} from 0 to 10 for accuracy, tone and completeness. Answer as "
    "'Score: x/10' followed by what to improve."
)
REFINE = "Rewrite the reply, addressing every point of the latest evaluation."

#: The working conversation kept between calls (in tokens, system prompt and ticket excluded).
CONTEXT_TOKENS = 12_000


def _tokens(messages: Sequence[BaseMessage]) -> int:
    return default_pricing().count_input_tokens(
        messages=[{"role": m.type, "content": m.content} for m in messages]
    )


class SupportAgent:
    """Answer :data:`TICKET`, refining until the evaluator is satisfied.

    Every model call is one ``chain.invoke`` of ``prompt | model`` with ``callbacks`` and
    ``metadata`` in the run config, so whatever handlers are given (a meter, the runcycles
    plugin) see every call and can stop the loop by raising.
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        callbacks: Sequence[BaseCallbackHandler] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        prompt = ChatPromptTemplate.from_messages(
            [("system", SYSTEM), ("human", TICKET), MessagesPlaceholder("history")]
        )
        self.chain = prompt | model
        self.callbacks = list(callbacks)
        self.metadata = dict(metadata or {})
        self.history: list[BaseMessage] = []

    def _ask(self, instruction: str, step: str) -> str:
        self.history.append(HumanMessage(instruction))
        reply = self.chain.invoke(
            {"history": self.history},
            config={"callbacks": self.callbacks, "metadata": self.metadata, "run_name": step},
        )
        self.history.append(reply)
        self.history = trim_messages(
            self.history,
            max_tokens=CONTEXT_TOKENS,
            token_counter=_tokens,
            strategy="last",
            start_on="human",
        )
        return str(reply.content)

    def run(self) -> str:
        """Loop until a draft passes the quality check (it never does: see the module doc)."""
        draft = self._ask(DRAFT, "draft")
        while True:
            score = parse_score(self._ask(EVALUATE, "evaluate"))
            if score is not None and score >= PASSING_SCORE:
                return draft
            draft = self._ask(REFINE, "refine")
