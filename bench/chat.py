"""Sections (g), (h) and (i): conversations, and what the prefix cache and routing save.

(g) multi-turn chat with a long shared system prompt, streamed, mlxq against mlx_lm.server;
(h) one long prompt sent twice, the second time served from the cache;
(i) two workers: does a conversation's next turn go back to the worker holding its prefix?

Everything goes through the OpenAI chat route (/v1/chat/completions) of both systems, greedy.
"""

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import redis
import redis.asyncio as aioredis
from tqdm import trange

from bench.clients import REQUEST_TIMEOUT_S, TokenCounter
from bench.procs import Processes
from bench.scaleout import CORES, ONE_CORE
from bench.stats import median, percentile, spread, table, verdict
from shared.protocol import prefix_owner_key

# (g) multi-turn chat
SYSTEM_TOKENS = 1000  # the shared system prompt alone (the chat template adds a few)
USERS = 4
TURNS = 3
CHAT_TOKENS = 32
THROUGHPUT_TARGET = 1.3  # mlxq / mlx_lm.server, aggregate tokens/s
LATER_TTFT_TARGET = 1.0  # mlxq / mlx_lm.server, p50 time to first token of turns 2-3
# (h) a long prompt twice
LONG_TOKENS = 2000
REPEAT_TARGET = 0.1  # second TTFT / first TTFT
PAUSE_S = 0.2  # between requests: the other system's OpenBLAS threads stop spinning by then
# (i) routing across two workers
ROUTE_SYSTEM_TOKENS = 500
CONVERSATIONS = 4
ROUTE_TOKENS = 16

SUBJECTS = ["dragon", "robot", "pirate", "wizard", "mermaid", "knight", "unicorn", "astronaut"]
ITEMS = ["lantern", "map", "coin", "key", "book", "compass", "rope", "bell"]


def facts(tag: str, tokens: int, counter: TokenCounter) -> str:
    """A deterministic system prompt of at least ``tokens`` tokens: a numbered list of facts.
    ``tag`` comes first, so prompts with different tags share no cached prefix."""
    lines = [f"{tag}. You are the archive's assistant. Answer from these facts only.", ""]
    i = 0
    while counter.count("\n".join(lines)) < tokens:
        for _ in range(5):
            i += 1
            lines.append(
                f"{i}. The {SUBJECTS[i % len(SUBJECTS)]} of room {(i * 37) % 500} keeps "
                f"{(i * 13) % 97} {ITEMS[(i * 3) % len(ITEMS)]}s and visits on day {i % 28 + 1}."
            )
    return "\n".join(lines)


def questions(user: int, turns: int) -> list[str]:
    """A user's questions, one per turn, different for each user."""
    a, b = 3 + 7 * user, 11 + 5 * user
    asked = [
        f"I am visitor {user}. What does fact {a} say? Explain it in detail.",
        f"And fact {b}? Compare it with fact {a}.",
        "Now tell me a short story about both of them.",
    ]
    return [asked[t % len(asked)] for t in range(turns)]


# -- talking to the OpenAI chat route of either system ----------------------------------------


@dataclass
class Reply:
    text: str
    seconds: float  # the whole request
    first_token_s: float | None  # streamed only: request sent -> first token's chunk
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None  # usage.prompt_tokens_details.cached_tokens, when reported
    worker: str | None = None  # mlxq's x-mlxq-worker header (non-streamed answers)


def _body(messages: list[dict], max_tokens: int, model: str | None, stream: bool) -> dict:
    body: dict = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    if model is not None:  # mlx_lm.server would load a model of that name: it gets none
        body["model"] = model
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _usage(usage: dict | None) -> tuple[int, int, int | None]:
    if not usage:
        raise RuntimeError("the answer carried no usage")
    details = usage.get("prompt_tokens_details") or {}
    return usage["prompt_tokens"], usage["completion_tokens"], details.get("cached_tokens")


async def stream_chat(
    client: httpx.AsyncClient, messages: list[dict], max_tokens: int, model: str | None
) -> Reply:
    """A streamed chat completion read to its end; the first token is the first chunk that
    carries content (or ends the choice: a first token that is no text yet)."""
    started = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    usage = None
    body = _body(messages, max_tokens, model, stream=True)
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"stream error: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    pieces.append(content)
                if first is None and (content or choice.get("finish_reason")):
                    first = time.perf_counter()
            usage = chunk.get("usage") or usage
    seconds = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream ended without a token")
    prompt, completion, cached = _usage(usage)
    return Reply("".join(pieces), seconds, first - started, prompt, completion, cached)


async def post_chat(
    client: httpx.AsyncClient, messages: list[dict], max_tokens: int, model: str | None
) -> Reply:
    started = time.perf_counter()
    body = _body(messages, max_tokens, model, stream=False)
    response = await client.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
    payload = response.json()
    prompt, completion, cached = _usage(payload.get("usage"))
    text = payload["choices"][0]["message"]["content"] or ""
    worker = response.headers.get("x-mlxq-worker")
    return Reply(text, seconds, None, prompt, completion, cached, worker)


def served_model(base_url: str) -> str:
    """The id mlxq serves (its chat route needs one)."""
    models = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"]
    return models[0]["id"]


def _client(base_url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections + 4)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S)


async def _converse(
    client: httpx.AsyncClient,
    model: str | None,
    system: str,
    asked: list[str],
    max_tokens: int,
    stream: bool,
    before_later=None,
) -> list[Reply]:
    """One user's conversation: each turn resends the previous turns, answers and a new
    question. ``before_later`` is awaited before each turn after the first."""
    messages = [{"role": "system", "content": system}]
    replies = []
    for turn, question in enumerate(asked):
        messages.append({"role": "user", "content": question})
        if turn > 0 and before_later is not None:
            await before_later()
        ask = stream_chat if stream else post_chat
        reply = await ask(client, list(messages), max_tokens, model)
        messages.append({"role": "assistant", "content": reply.text})
        replies.append(reply)
    return replies


async def conversations(
    base_url: str,
    model: str | None,
    systems: list[str],
    turns: int,
    max_tokens: int,
    stream: bool,
    before_later=None,
) -> tuple[list[list[Reply]], float]:
    """One conversation per system prompt, all at once; wall time first send -> last answer."""
    async with _client(base_url, len(systems)) as client:
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(
                _converse(
                    client, model, system, questions(u, turns), max_tokens, stream, before_later
                )
                for u, system in enumerate(systems)
            )
        )
        return list(replies), time.perf_counter() - started


# -- (g) multi-turn chat ---------------------------------------------------------------------


@dataclass
class ChatSide:
    """One system's numbers, one value per round."""

    tps: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    first_ttft_ms: list[float] = field(default_factory=list)  # p50 over the users' turn 1
    later_ttft_ms: list[float] = field(default_factory=list)  # p50 over turns 2..TURNS
    later_cached: list[float] = field(default_factory=list)  # cached / prompt tokens, later
    first_cached: list[float] = field(default_factory=list)  # cached / prompt tokens, turn 1
    prompt_tokens: list[int] = field(default_factory=list)  # the last turn's, largest


@dataclass
class ChatResult:
    system_tokens: int
    sides: dict[str, ChatSide] = field(
        default_factory=lambda: {"mlxq": ChatSide(), "server": ChatSide()}
    )
    same_texts: list[int] = field(default_factory=list)


def run_chat(mlxq_url: str, server_url: str, counter: TokenCounter, rounds: int) -> ChatResult:
    model = served_model(mlxq_url)
    systems = {"mlxq": (mlxq_url, model), "server": (server_url, None)}
    warm = facts("Warm-up archive", SYSTEM_TOKENS, counter)
    for url, name in systems.values():  # first-call allocations at these lengths and batches
        asyncio.run(conversations(url, name, [warm, warm], 2, 8, stream=True))
    result = ChatResult(counter.count(warm))
    for round_index in trange(rounds, desc="(g) chat", unit="round", leave=False):
        # Its own system prompt each round: an earlier round's cache must not serve it.
        system = facts(f"Archive {round_index}", SYSTEM_TOKENS, counter)
        order = ["mlxq", "server"] if round_index % 2 == 0 else ["server", "mlxq"]
        texts: dict[str, list[str]] = {}
        for name in order:
            url, model_name = systems[name]
            time.sleep(PAUSE_S)
            replies, wall = asyncio.run(
                conversations(url, model_name, [system] * USERS, TURNS, CHAT_TOKENS, stream=True)
            )
            _record_chat(result.sides[name], replies, wall)
            texts[name] = [r.text for user in replies for r in user]
        result.same_texts.append(
            sum(a == b for a, b in zip(texts["mlxq"], texts["server"], strict=True))
        )
    return result


def _record_chat(side: ChatSide, replies: list[list[Reply]], wall: float) -> None:
    first = [user[0] for user in replies]
    later = [r for user in replies for r in user[1:]]
    tokens = sum(r.completion_tokens for user in replies for r in user)
    side.tps.append(tokens / wall)
    side.wall_s.append(wall)
    side.tokens.append(tokens)
    side.first_ttft_ms.append(percentile([r.first_token_s * 1000 for r in first], 50))
    side.later_ttft_ms.append(percentile([r.first_token_s * 1000 for r in later], 50))
    side.first_cached.append(_cached_share(first))
    side.later_cached.append(_cached_share(later))
    side.prompt_tokens.append(max(r.prompt_tokens for r in later))


def _cached_share(replies: list[Reply]) -> float:
    prompt = sum(r.prompt_tokens for r in replies)
    return sum(r.cached_tokens or 0 for r in replies) / prompt if prompt else 0.0


def render_chat(result: ChatResult, rounds: int) -> tuple[str, list[list[str]]]:
    m, s = result.sides["mlxq"], result.sides["server"]
    tps_ratios = [a / b for a, b in zip(m.tps, s.tps, strict=True)]
    first_ratios = [a / b for a, b in zip(m.first_ttft_ms, s.first_ttft_ms, strict=True)]
    later_ratios = [a / b for a, b in zip(m.later_ttft_ms, s.later_ttft_ms, strict=True)]
    tps_ratio, later_ratio = median(tps_ratios), median(later_ratios)
    tps_line = verdict(tps_ratio, THROUGHPUT_TARGET, higher_is_better=True)
    later_line = verdict(later_ratio, LATER_TTFT_TARGET, higher_is_better=False)
    summary = [
        [
            "(g) multi-turn chat, aggregate tokens/s, mlxq / mlx_lm.server",
            f">= {THROUGHPUT_TARGET}x",
            f"{tps_ratio:.2f}x",
            tps_line,
        ],
        [
            f"(g) multi-turn chat, p50 time to first token of turns 2-{TURNS}, "
            "mlxq / mlx_lm.server",
            f"<= {LATER_TTFT_TARGET}x",
            f"{later_ratio:.2f}x ({median(m.later_ttft_ms):.0f} vs "
            f"{median(s.later_ttft_ms):.0f} ms)",
            later_line,
        ],
    ]
    rows = [
        [
            "wall time, s",
            spread(m.wall_s),
            spread(s.wall_s),
            spread([a / b for a, b in zip(m.wall_s, s.wall_s, strict=True)], 2, suffix="x"),
        ],
        [
            "aggregate tokens/s",
            spread(m.tps),
            spread(s.tps),
            spread(tps_ratios, 2, prefix="**", suffix="x**"),
        ],
        [
            "time to first token, turn 1, p50 ms",
            spread(m.first_ttft_ms, 0),
            spread(s.first_ttft_ms, 0),
            spread(first_ratios, 2, suffix="x"),
        ],
        [
            f"time to first token, turns 2-{TURNS}, p50 ms",
            spread(m.later_ttft_ms, 0),
            spread(s.later_ttft_ms, 0),
            spread(later_ratios, 2, prefix="**", suffix="x**"),
        ],
        [
            "prompt tokens from cache, turn 1",
            _percent(m.first_cached),
            _percent(s.first_cached),
            "",
        ],
        [
            f"prompt tokens from cache, turns 2-{TURNS}",
            _percent(m.later_cached),
            _percent(s.later_cached),
            "",
        ],
        ["completion tokens per round", _span(m.tokens), _span(s.tokens), ""],
        ["longest prompt (last turn), tokens", _span(m.prompt_tokens), _span(s.prompt_tokens), ""],
    ]
    answers = USERS * TURNS
    parts = [
        "## (g) Multi-turn chat: mlxq against mlx_lm.server",
        "",
        f"{USERS} users talk at once, {TURNS} turns each, through `/v1/chat/completions` "
        f"(streamed, greedy, max_tokens {CHAT_TOKENS}). They share a system prompt of "
        f"{result.system_tokens} tokens (a numbered list of facts); each turn sends the "
        "previous turns, their answers and a new question, as chat clients do; a user sends "
        "the next turn as soon as the answer is complete. mlxq: one worker, "
        "`MLXQ_WORKER_CONCURRENCY=8`, its prefix cache at its default size; mlx_lm.server: "
        "`--decode-concurrency 8` and its own prompt cache at its default (10 entries); the "
        "same float32 weights and OpenBLAS for both, as in (c). Each round has its own system "
        "prompt (its first line differs), so no round is served from an earlier one's cache. "
        f"Aggregate = completion tokens / wall time from the first send to the last answer; "
        "time to first token = request sent -> first chunk with content, as the client sees "
        f"it. {rounds} rounds, both systems back to back in each (order alternating); median "
        "(min-max) over rounds; each ratio is the median of the rounds' ratios.",
        "",
        table(["", "mlxq", "mlx_lm.server", "mlxq / server"], rows),
        "",
        f"- aggregate tokens/s: target >= {THROUGHPUT_TARGET}x mlx_lm.server's: " + tps_line,
        f"- time to first token of turns 2-{TURNS}: target no worse than mlx_lm.server's "
        f"(<= {LATER_TTFT_TARGET}x): " + later_line,
        f"- same answer from both: {sum(result.same_texts)}/{answers * len(result.same_texts)}",
        "",
        ABOUT_G,
        "",
    ]
    return "\n".join(parts), summary


ABOUT_G = """\
**What this shows.** A chat workload, where most of each prompt was computed before: the
system prompt is shared by every user, and each later turn repeats the whole conversation so
far. Both systems keep KV caches across requests; the "prompt tokens from cache" rows are
what each reports in `usage.prompt_tokens_details.cached_tokens`. Turn 1 arrives from all
users at once, before anything is cached; later turns arrive one by one, each while the
other users are still being answered, so their time to first token includes waiting for a
decode step of the running batch. mlxq prefills such a lone arrival's uncached tail at once
and lets it join the batch with its last token only; given the whole tail, mlx-lm's
BatchGenerator (which mlx_lm.server runs as it is) spends one more decode step of the batch
before the first token.

**What is missed, and why.** One prompt shape (a long shared system prompt, short turns) and
one machine with 2 cores, where the client, the API and Redis share the cores with the model.
Answers are short (32 tokens), so prefill dominates; with long answers decoding would, and
the systems would come close to (c)'s ratio."""


# -- (h) a long prompt twice -----------------------------------------------------------------


@dataclass
class RepeatSide:
    first_ms: list[float] = field(default_factory=list)
    second_ms: list[float] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)  # the second request's cached_tokens
    prompt_tokens: list[int] = field(default_factory=list)


@dataclass
class RepeatResult:
    sides: dict[str, RepeatSide] = field(
        default_factory=lambda: {"mlxq": RepeatSide(), "server": RepeatSide()}
    )


def long_prompt(tag: str, counter: TokenCounter) -> str:
    notes = facts(tag, LONG_TOKENS, counter)
    return notes + "\n\nWhich room keeps the most lanterns? Answer with its number."


def run_repeat(mlxq_url: str, server_url: str, counter: TokenCounter, rounds: int) -> RepeatResult:
    """The same long prompt twice in a row (max_tokens 1), streamed; a new prompt each round."""
    model = served_model(mlxq_url)
    systems = {"mlxq": (mlxq_url, model), "server": (server_url, None)}
    result = RepeatResult()
    warm = [{"role": "user", "content": long_prompt("Warm-up notes", counter)}]
    for url, name in systems.values():
        asyncio.run(_twice(url, name, warm))
    for round_index in trange(rounds, desc="(h) repeat", unit="round", leave=False):
        messages = [{"role": "user", "content": long_prompt(f"Notes {round_index}", counter)}]
        for name in ["mlxq", "server"] if round_index % 2 == 0 else ["server", "mlxq"]:
            url, model_name = systems[name]
            first, second = asyncio.run(_twice(url, model_name, messages))
            side = result.sides[name]
            assert first.first_token_s is not None and second.first_token_s is not None
            side.first_ms.append(first.first_token_s * 1000)
            side.second_ms.append(second.first_token_s * 1000)
            side.cached.append(second.cached_tokens or 0)
            side.prompt_tokens.append(second.prompt_tokens)
    return result


async def _twice(base_url: str, model: str | None, messages: list[dict]) -> tuple[Reply, Reply]:
    async with _client(base_url, 1) as client:
        replies = []
        for _ in range(2):
            await asyncio.sleep(PAUSE_S)
            replies.append(await stream_chat(client, messages, 1, model))
        return replies[0], replies[1]


def render_repeat(result: RepeatResult, rounds: int) -> tuple[str, list[list[str]]]:
    rows = []
    ratios: dict[str, float] = {}
    for name, label in (("mlxq", "mlxq (one worker)"), ("server", "mlx_lm.server")):
        side = result.sides[name]
        paired = [b / a for a, b in zip(side.first_ms, side.second_ms, strict=True)]
        ratios[name] = median(paired)
        rows.append(
            [
                label,
                _span(side.prompt_tokens),
                spread(side.first_ms, 0),
                spread(side.second_ms, 0),
                spread(paired, 3, suffix="x"),
                _span(side.cached),
            ]
        )
    line = verdict(ratios["mlxq"], REPEAT_TARGET, higher_is_better=False)
    m, s = result.sides["mlxq"], result.sides["server"]
    summary = [
        [
            "(h) long prompt sent twice, mlxq: second time to first token / first",
            f"<= {REPEAT_TARGET}x",
            f"{ratios['mlxq']:.3f}x ({median(m.second_ms):.0f} vs {median(m.first_ms):.0f} ms; "
            f"{_span(m.cached)} of {_span(m.prompt_tokens)} tokens cached)",
            line,
        ],
        [
            "(h) the same, mlx_lm.server (for comparison)",
            "(no target)",
            f"{ratios['server']:.3f}x ({median(s.second_ms):.0f} vs {median(s.first_ms):.0f} ms)",
            "",
        ],
    ]
    parts = [
        "## (h) A long prompt sent twice",
        "",
        f"One chat message of about {LONG_TOKENS} tokens (notes and a question), max_tokens 1, "
        "streamed through `/v1/chat/completions`, sent twice in a row (0.2 s apart) to "
        "each system; a new prompt each round (its first line differs). mlxq: one worker "
        "(the same processes as (g)); mlx_lm.server: as in (g). Time to first token as the "
        f"client sees it. {rounds} rounds, the two systems back to back in each (order "
        "alternating); median (min-max) over rounds.",
        "",
        table(
            [
                "system",
                "prompt tokens",
                "first time, ms",
                "second time, ms",
                "second / first",
                "cached_tokens, second time",
            ],
            rows,
        ),
        "",
        f"- mlxq: second / first: target <= {REPEAT_TARGET}x: " + line,
        "",
        ABOUT_H,
        "",
    ]
    return "\n".join(parts), summary


ABOUT_H = """\
**What this shows.** The prefix cache at its simplest: the whole prompt is cached after the
first request, so the second prefills one token (the model must be fed at least one; the
cache is trimmed by that token) instead of all of them. Both systems report that in
`cached_tokens`. What remains of the second request is the HTTP, queue and event path (for
mlxq) and one forward pass over one token with the cached context.

**What is missed, and why.** Identical prompts only; section (g) has prompts that share a
prefix and then differ. The cache here is warm in the sense that nothing else ran in between;
under memory pressure the least recently used entries are dropped first."""


# -- (i) routing across two workers ----------------------------------------------------------


@dataclass
class RouteSide:
    same_worker: list[float] = field(default_factory=list)  # share of later turns, per round
    cached: list[float] = field(default_factory=list)  # cached / prompt tokens, later turns
    later_ms: list[float] = field(default_factory=list)  # p50 latency of later turns
    wall_s: list[float] = field(default_factory=list)
    first_split: list[str] = field(default_factory=list)  # first turns per worker


@dataclass
class RouteResult:
    system_tokens: int
    sides: dict[str, RouteSide] = field(
        default_factory=lambda: {"routed": RouteSide(), "unrouted": RouteSide()}
    )


def run_routing(
    procs: Processes, env: dict[str, str], counter: TokenCounter, rounds: int
) -> RouteResult:
    """One API, two workers (one core each) that stay up; both modes in every round."""
    url, api = procs.mlxq_api(env)
    workers = [procs.mlxq_worker(env | ONE_CORE, timeout=300, cpus=core) for core in CORES]
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    try:
        model = served_model(url)
        warm = [facts(f"Warm-up archive {c}", ROUTE_SYSTEM_TOKENS, counter) for c in range(4)]
        asyncio.run(conversations(url, model, warm, 2, 4, stream=False))
        result = RouteResult(counter.count(warm[0]))
        for round_index in trange(rounds, desc="(i) routing", unit="round", leave=False):
            modes = ["routed", "unrouted"] if round_index % 2 == 0 else ["unrouted", "routed"]
            for mode in modes:
                _forget_claims(connection)
                systems = [
                    facts(f"Archive {round_index}.{mode}.{c}", ROUTE_SYSTEM_TOKENS, counter)
                    for c in range(CONVERSATIONS)
                ]
                forget = _async_forget(env["MLXQ_REDIS_URL"]) if mode == "unrouted" else None
                replies, wall = asyncio.run(
                    conversations(url, model, systems, TURNS, ROUTE_TOKENS, False, forget)
                )
                _record_route(result.sides[mode], replies, wall)
    finally:
        for process in (*reversed(workers), api):
            procs.stop(process)
    return result


def _forget_claims(connection: redis.Redis) -> None:
    keys = list(connection.scan_iter(prefix_owner_key("*"), count=1000))
    if keys:
        connection.delete(*keys)


def _async_forget(redis_url: str):
    """Before each later turn: delete every worker's claims, so the API finds no owner."""

    async def forget() -> None:
        connection = aioredis.Redis.from_url(redis_url)
        try:
            keys = [key async for key in connection.scan_iter(prefix_owner_key("*"), count=1000)]
            if keys:
                await connection.delete(*keys)
        finally:
            await connection.aclose()

    return forget


def _record_route(side: RouteSide, replies: list[list[Reply]], wall: float) -> None:
    later = [(user[0].worker, r) for user in replies for r in user[1:]]
    if any(r.worker is None for user in replies for r in user):
        raise RuntimeError("an answer came without the x-mlxq-worker header")
    side.same_worker.append(sum(owner == r.worker for owner, r in later) / len(later))
    side.cached.append(_cached_share([r for _, r in later]))
    side.later_ms.append(percentile([r.seconds * 1000 for _, r in later], 50))
    side.wall_s.append(wall)
    firsts = sorted(str(user[0].worker) for user in replies)
    counts = sorted((firsts.count(w) for w in set(firsts)), reverse=True)
    side.first_split.append("/".join(str(c) for c in counts + [0] * (2 - len(counts))))


def render_routing(result: RouteResult, rounds: int) -> tuple[str, list[list[str]]]:
    r, u = result.sides["routed"], result.sides["unrouted"]
    rows = [
        [
            "later turns answered by the conversation's first worker",
            _percent(r.same_worker),
            _percent(u.same_worker),
        ],
        [
            "later turns' prompt tokens served from cache",
            _percent(r.cached),
            _percent(u.cached),
        ],
        ["later turns' p50 latency, ms", spread(r.later_ms, 0), spread(u.later_ms, 0)],
        ["wall time, s", spread(r.wall_s), spread(u.wall_s)],
        [
            "first turns per worker (more / fewer), each round",
            ", ".join(r.first_split),
            ", ".join(u.first_split),
        ],
    ]
    summary = [
        [
            "(i) 2 workers: later turns on the conversation's worker, routed / not routed",
            "(no target)",
            f"{median(r.same_worker):.0%} / {median(u.same_worker):.0%}",
            "",
        ],
        [
            "(i) 2 workers: later turns' prompt tokens from cache, routed / not routed",
            "(no target)",
            f"{median(r.cached):.0%} / {median(u.cached):.0%}",
            "",
        ],
    ]
    later = CONVERSATIONS * (TURNS - 1)
    parts = [
        "## (i) Routing a conversation back to its worker",
        "",
        f"One API, two workers, each pinned to a core of its own with one BLAS thread (as in "
        f"(d)). {CONVERSATIONS} conversations at once, {TURNS} turns each, one turn after the "
        "other within a conversation, non-streamed through `/v1/chat/completions` (greedy, "
        f"max_tokens {ROUTE_TOKENS}); each conversation has its own system prompt of "
        f"{result.system_tokens} tokens. The worker that answered is the response's "
        "`x-mlxq-worker` header; cached tokens are `usage.prompt_tokens_details.cached_tokens`, "
        f"summed over the {later} later turns and divided by their prompt tokens.",
        "",
        "**Routed** is mlxq as shipped: a worker that answers a conversation claims its "
        "prefixes in Redis (`mlxq:prefix:<hash>`), and the API sends the next turn to that "
        "worker's own queue. **Not routed** is the same processes with the claims deleted "
        "(every `mlxq:prefix:*` key) just before each later turn is sent, so the API finds no "
        "owner and puts the turn on the shared queue, where either worker may take it: what "
        "mlxq did before routing. Source unchanged; only the bench deletes the keys. "
        f"{rounds} rounds, both modes in each (order alternating), each with new "
        "conversations; median (min-max) over rounds.",
        "",
        table(["", "routed (default)", "not routed"], rows),
        "",
        ABOUT_I,
        "",
    ]
    return "\n".join(parts), summary


ABOUT_I = """\
**What this shows.** With more than one worker the prefix cache pays only if a conversation's
next turn reaches the worker that holds its KV. Unrouted, a later turn lands on either worker
(about half the time on the other one, which must prefill the whole conversation again);
routed, it goes back to its worker while that worker has a free slot.

**What is missed, and why.** Two workers on one 2-core machine, where the API, Redis and the
client share the cores with the workers. A routed turn waits for its own worker even when the
other is idle (up to `MLXQ_ROUTE_WAIT`); with one worker per Mac the same holds across
machines."""


def _percent(values: list[float]) -> str:
    middle = f"{median(values):.0%}"
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):.0%}-{max(values):.0%})"


def _span(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"
