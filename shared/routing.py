"""Which conversation prefixes a request shares with earlier ones, as hashes both sides compute.

A worker that answered a chat request holds its KV (the prompt and the answer) in its prefix
cache. The next turn resends the same messages plus the answer and a new question, so the
hashes of its leading messages match. The worker claims the hashes of every leading part of
the conversation it answered; the API looks up the request's own and sends the request to the
worker that holds its longest prefix (api/submit.py). Hashing messages, not tokens, lets the
API route without the model's tokenizer.
"""

import hashlib
import json

from shared.schemas import ChatMessage, GenerationRequest

ROUTE_TTL_S = 1800
"""How long a claim lasts: a conversation idle longer than this may land on any worker."""


def prefix_hashes(request: GenerationRequest) -> list[str]:
    """The hash of each leading part of the request's conversation: messages[:1],
    messages[:2], ... (empty for raw prompts, which are not routed)."""
    if not request.messages:
        return []
    return _chained(_seed(request), request.messages)


def answered_prefix_hashes(request: GenerationRequest, answer: str) -> list[str]:
    """The hashes a worker claims after answering: the conversation and its answer."""
    if not request.messages:
        return []
    reply = ChatMessage(role="assistant", content=answer)
    return _chained(_seed(request), [*request.messages, reply])


def _seed(request: GenerationRequest) -> str:
    """What shapes the prompt besides the messages: the model, tools and template options."""
    tools = [t.model_dump(mode="json") for t in request.tools or []]
    extras = {"tools": tools, "template": request.chat_template_kwargs}
    return request.model + "\x00" + json.dumps(extras, sort_keys=True)


def _chained(seed: str, messages: list[ChatMessage]) -> list[str]:
    digest = hashlib.sha256(seed.encode())
    hashes = []
    for message in messages:
        part = message.model_dump(
            mode="json", include={"role", "content", "tool_calls", "tool_call_id"}
        )
        digest.update(json.dumps(part, sort_keys=True).encode())
        hashes.append(digest.copy().hexdigest()[:32])
    return hashes
