"""A LangChain chat model that behaves like gpt-4o without the network.

It is a real :class:`~langchain_core.language_models.BaseChatModel`: LangChain runs its callbacks
(so the runcycles plugin sees it exactly as it would see ``ChatOpenAI``), it reports itself to
tracing as ``openai`` / ``gpt-4o`` with its ``max_tokens``, it takes about as long as a short
completion on a fast provider, and every reply carries ``usage_metadata`` counted from what was
actually sent and generated, so a longer conversation costs more, as it does on the real API.
"""

from __future__ import annotations

import random
import re
import threading
import time
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from runcycles_core.pricing import default_pricing

__all__ = ["EVALUATE_MARKER", "FakeGPT4o", "parse_score"]

#: The evaluator's instruction starts with this; the model answers it with a score.
EVALUATE_MARKER = "Rate the latest draft"

_SCORE = re.compile(r"Score:\s*(\d+(?:\.\d+)?)\s*/\s*10")

_OPENINGS = [
    "Hi Dana, thank you for reaching out, and I'm sorry for the confusion on your latest invoice.",
    "Hello Dana, thanks for flagging this so quickly; billing surprises are the last thing you "
    "need at month end.",
    "Hi Dana, I appreciate you taking the time to send the contract details along with the "
    "invoice.",
]
_BODY = [
    "I reviewed invoice INV-20931 and can confirm it shows $847.00, while your annual contract "
    "sets the monthly fee at $720.00.",
    "The $127.00 difference comes from usage-based add-ons that were billed at list price "
    "instead of the discounted rate in your agreement.",
    "Your contract, signed in March, includes the analytics add-on at no extra charge, so that "
    "line should not have appeared at all.",
    "I have opened a billing correction (case BC-5531) so that the invoice is reissued at "
    "the contracted $720.00.",
    "You will receive the corrected invoice by email within two business days, and nothing "
    "is due on the original one in the meantime.",
    "If the original amount was already charged to your card, the $127.00 will be refunded "
    "to the same card within five to seven business days.",
    "I also added a note to your account so that future invoices apply the contract pricing "
    "automatically.",
    "To make sure this does not happen again, our billing team is reviewing why the contract "
    "discount was not applied to this cycle.",
    "Please keep the case number handy in case you need to reference it with your finance team.",
    "I double-checked the previous three invoices as well, and they were all billed correctly "
    "at $720.00.",
    "If your team's usage has grown and you would like to review the plan, I'm happy to set up "
    "a short call with your account manager.",
    "For your records, the corrected invoice will keep the same invoice number with a revision "
    "suffix, so your accounting system can match it.",
]
_CLOSINGS = [
    "Thanks again for your patience, and let me know if anything else looks off.",
    "Please reply here if you have any questions; I'll keep this ticket open until the "
    "corrected invoice reaches you.",
    "Best regards, Ava from Acme Cloud Support.",
]
_CRITIQUE = [
    "The reply explains the $127.00 difference but buries the refund timeline.",
    "The tone is polite, yet the first paragraph repeats the customer's complaint at length.",
    "It should state up front that nothing is due on the original invoice.",
    "The case number appears only once; it should also be in the closing.",
    "The explanation of the add-on pricing is accurate but too long for a customer reply.",
    "It does not confirm which payment method will receive the refund.",
]


def parse_score(text: str) -> float | None:
    """The evaluator's ``Score: x/10`` (None if the reply has none)."""
    m = _SCORE.search(text)
    return float(m.group(1)) if m else None


class FakeGPT4o(BaseChatModel):
    """``ChatOpenAI(model="gpt-4o", max_tokens=1024)`` as far as LangChain and the plugin can tell.

    Drafting prompts get a support reply of a few hundred tokens; evaluation prompts (the last
    message starts with :data:`EVALUATE_MARKER`) get ``Score: x/10`` with x drawn from 5.5-6.9,
    which is the demo's bug: the agent waits for 8.0, which never comes.
    """

    model_name: str = "gpt-4o"
    max_tokens: int = 1024
    latency_s: float = 0.05
    seed: int = 0
    _rng: random.Random = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def model_post_init(self, context: Any, /) -> None:
        self._rng = random.Random(self.seed)

    @property
    def _llm_type(self) -> str:
        return "fake-gpt-4o"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # What ChatOpenAI reports: the plugin prices the call from these.
        return LangSmithParams(
            ls_provider="openai",
            ls_model_name=self.model_name,
            ls_model_type="chat",
            ls_max_tokens=self.max_tokens,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self.latency_s)
        last = messages[-1].content if messages else ""
        evaluating = isinstance(last, str) and last.startswith(EVALUATE_MARKER)
        text = self._critique() if evaluating else self._draft()
        pricing = default_pricing()
        sent = [{"role": m.type, "content": m.content} for m in messages]
        input_tokens = pricing.count_input_tokens(messages=sent)
        output_tokens = min(pricing.token_counter(text), self.max_tokens)
        message = AIMessage(
            text,
            usage_metadata=UsageMetadata(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
            ),
            response_metadata={"model_name": "gpt-4o-2024-08-06", "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _draft(self) -> str:
        with self._lock:
            body = self._rng.sample(_BODY, k=self._rng.randint(8, len(_BODY)))
            return "\n\n".join(
                [self._rng.choice(_OPENINGS), " ".join(body), self._rng.choice(_CLOSINGS)]
            )

    def _critique(self) -> str:
        with self._lock:
            score = self._rng.uniform(5.5, 6.9)
            notes = " ".join(self._rng.sample(_CRITIQUE, k=3))
        return f"Score: {score:.1f}/10. {notes} Revise and resubmit."
