"""Section (m): speculative decoding (prompt lookup) against direct mlx-lm, same weights.

One request at a time: each prompt of a copy-heavy set and a free-writing set, through mlxq
with speculation (the default), through mlxq with ``"speculative": false``, and through
mlx-lm's ``stream_generate`` in its own process, in a rotating order. Then 8 requests at once
(half copying, half writing), mlxq with speculation against mlxq without.
"""

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
from tqdm import trange

from bench.clients import DirectMLX
from bench.stats import median, spread, table, verdict

CODE = """def total_price(items, tax_rate):
    subtotal = 0
    for item in items:
        subtotal += item.price * item.quantity
    tax = subtotal * tax_rate
    return subtotal + tax
"""
DOCUMENT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. Locally nicknamed 'La dame de fer', it was constructed as the "
    "centrepiece of the 1889 World's Fair."
)
COPY_HEAVY = {
    "code edit": "Rename the variable subtotal to base in this Python code. Reply with the full "
    "code only.\n\n" + CODE,
    "fix typos": "Fix the spelling mistakes in this paragraph and write it out again: The Eifel "
    "Tower is a wrought-iron latice tower on the Champ de Mars in Paris, France. It is named "
    "after the enginer Gustave Eiffel, whose company designed and bilt the tower.",
    "quote a document": f"Document:\n{DOCUMENT}\n\nQuestion: Who is the Eiffel Tower named "
    "after and when was it built? Quote the document.",
    "JSON, one change": 'Add a field "age": 31 to this JSON and output the full JSON:\n'
    '{"name": "Alice Smith", "email": "alice@example.com", "city": "London", '
    '"country": "United Kingdom", "languages": ["English", "French"]}',
    "list, one change": "Write this shopping list again, adding milk at the end: apples, "
    "oranges, bananas, pears, grapes, plums, cherries, lemons.",
}
FREE_WRITING = {
    "story": "Write a long story about a dragon.",
    "explanation": "Explain why the sky is blue.",
    "poem": "Write a poem about autumn in the city.",
}
MAX_TOKENS = 128
CONCURRENT_TOKENS = 64
COPY_TARGET = 1.5
FREE_TARGET = 0.97
CONCURRENT_TARGET = 1.0
SYSTEMS = ("speculative", "plain", "direct")
DRAFT_LAYERS = 6
"""The draft model: the first 6 of the demo model's 30 layers (bench/draft_model.py)."""
DRAFT_TOKENS = 3
DRAFT_PROMPTS = ["fix typos", "list, one change", *FREE_WRITING]


@dataclass
class PromptResult:
    name: str
    copy_heavy: bool
    tps: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SYSTEMS})
    acceptance: list[float] = field(default_factory=list)
    same_text: list[bool] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    direct_text: str = ""


@dataclass
class SpeculationResult:
    prompts: list[PromptResult]
    concurrent: dict[str, list[float]] = field(
        default_factory=lambda: {"speculative": [], "plain": []}
    )
    concurrent_same: list[int] = field(default_factory=list)


@dataclass
class DraftResult:
    """Per prompt: tokens/s of mlxq with a draft model and of mlx_lm.server with the same."""

    tps: dict[str, dict[str, list[float]]]
    acceptance: dict[str, list[float]]
    same_text: dict[str, dict[str, list[bool]]]
    """Per prompt and system: its text was direct mlx-lm's (without a draft model)."""
    concurrent: dict[str, list[float]] = field(default_factory=lambda: {"mlxq": [], "server": []})
    """8 at once: aggregate tokens/s per round of each system."""
    concurrent_same: list[int] = field(default_factory=list)
    """8 at once: how many of mlxq's texts were the same as without a draft model."""


@dataclass
class Streamed:
    text: str
    completion_tokens: int
    seconds: float
    speculation: dict | None


def ask_streamed(
    client: httpx.Client, question: str, max_tokens: int, speculative: bool
) -> Streamed:
    """A streamed /ask, read to its ``done`` event (exact token counts and draft stats)."""
    body = {"question": question, "max_tokens": max_tokens, "stream": True}
    if not speculative:
        body["speculative"] = False
    started = time.perf_counter()
    with client.stream("POST", "/ask", json=body) as response:
        response.raise_for_status()
        lines = list(response.iter_lines())
    seconds = time.perf_counter() - started
    done = json.loads(lines[lines.index("event: done") + 1].removeprefix("data: "))
    return Streamed(done["answer"], done["completion_tokens"], seconds, done.get("speculation"))


async def _ask_async(
    client: httpx.AsyncClient, question: str, max_tokens: int, speculative: bool
) -> Streamed:
    body: dict = {"question": question, "max_tokens": max_tokens, "stream": True}
    if not speculative:
        body["speculative"] = False
    started = time.perf_counter()
    lines = []
    async with client.stream("POST", "/ask", json=body) as response:
        response.raise_for_status()
        lines = [line async for line in response.aiter_lines()]
    done = json.loads(lines[lines.index("event: done") + 1].removeprefix("data: "))
    seconds = time.perf_counter() - started
    return Streamed(done["answer"], done["completion_tokens"], seconds, done.get("speculation"))


async def _together(url: str, questions: list[str], speculative: bool) -> tuple[list, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(_ask_async(client, q, CONCURRENT_TOKENS, speculative) for q in questions)
        )
        return list(answers), time.perf_counter() - started


def concurrent_questions() -> list[str]:
    """The 8 sent at once: 4 copy-heavy, 4 free writing."""
    questions = list(COPY_HEAVY.values())[:4] + list(FREE_WRITING.values())
    return [*questions, "Write a short letter to a friend about your holiday."]


def run_speculation(mlxq_url: str, direct: DirectMLX, rounds: int) -> SpeculationResult:
    prompts = [(n, q, True) for n, q in COPY_HEAVY.items()]
    prompts += [(n, q, False) for n, q in FREE_WRITING.items()]
    result = SpeculationResult([PromptResult(name, copy) for name, _, copy in prompts])
    with httpx.Client(base_url=mlxq_url, timeout=600) as client:
        ask_streamed(client, "Hello", 8, True)  # warm-up: first-call allocations
        direct.ask("Hello", 8)
        for round_index in trange(rounds, desc="speculation", unit="round", leave=False):
            for (_, question, _), record in zip(prompts, result.prompts, strict=True):
                order = SYSTEMS[round_index % 3 :] + SYSTEMS[: round_index % 3]
                texts = {}
                for system in order:
                    if system == "direct":
                        answer = direct.ask(question, MAX_TOKENS)
                        texts[system] = record.direct_text = answer.text
                        record.tps[system].append(answer.completion_tokens / answer.seconds)
                        continue
                    streamed = ask_streamed(client, question, MAX_TOKENS, system == "speculative")
                    texts[system] = streamed.text
                    record.tps[system].append(streamed.completion_tokens / streamed.seconds)
                    if system == "speculative":
                        record.tokens.append(streamed.completion_tokens)
                        rate = (streamed.speculation or {}).get("acceptance_rate")
                        record.acceptance.append(rate or 0.0)
                record.same_text.append(len(set(texts.values())) == 1)
    questions = concurrent_questions()
    asyncio.run(_together(mlxq_url, questions, True))  # warm-up: a full batch
    for round_index in trange(rounds, desc="concurrent", unit="round", leave=False):
        runs = {}
        for speculative in (True, False) if round_index % 2 == 0 else (False, True):
            answers, wall = asyncio.run(_together(mlxq_url, questions, speculative))
            name = "speculative" if speculative else "plain"
            result.concurrent[name].append(sum(a.completion_tokens for a in answers) / wall)
            runs[name] = [a.text for a in answers]
        same = sum(a == b for a, b in zip(runs["speculative"], runs["plain"], strict=True))
        result.concurrent_same.append(same)
    return result


def _ask_server(client: httpx.Client, question: str) -> tuple[str, int, float]:
    body = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
    }
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    payload = response.json()
    text = payload["choices"][0]["message"]["content"]
    return text, payload["usage"]["completion_tokens"], seconds


def run_draft(
    mlxq_url: str, server_url: str, rounds: int, lookup: SpeculationResult
) -> DraftResult:
    """One request at a time: mlxq with MLXQ_DRAFT_MODEL (prompt lookup first, the draft
    model where it finds nothing) against mlx_lm.server with --draft-model (the same); each
    text compared with direct mlx-lm's (``lookup``'s) for the same prompt."""
    questions = {**COPY_HEAVY, **FREE_WRITING}
    direct = {r.name: r.direct_text for r in lookup.prompts}
    result = DraftResult(
        {n: {"mlxq": [], "server": []} for n in DRAFT_PROMPTS},
        {n: [] for n in DRAFT_PROMPTS},
        {n: {"mlxq": [], "server": []} for n in DRAFT_PROMPTS},
    )
    with (
        httpx.Client(base_url=mlxq_url, timeout=600) as mlxq,
        httpx.Client(base_url=server_url, timeout=600) as server,
    ):
        ask_streamed(mlxq, "Hello", 8, True)  # warm-up
        _ask_server(server, "Hello")
        for round_index in trange(rounds, desc="draft model", unit="round", leave=False):
            for name in DRAFT_PROMPTS:
                texts = {}
                for system in ("mlxq", "server") if round_index % 2 == 0 else ("server", "mlxq"):
                    if system == "mlxq":
                        streamed = ask_streamed(mlxq, questions[name], MAX_TOKENS, True)
                        texts[system] = streamed.text
                        tps = streamed.completion_tokens / streamed.seconds
                        rate = (streamed.speculation or {}).get("acceptance_rate")
                        result.acceptance[name].append(rate or 0.0)
                    else:
                        text, tokens, seconds = _ask_server(server, questions[name])
                        texts[system], tps = text, tokens / seconds
                    result.tps[name][system].append(tps)
                    result.same_text[name][system].append(texts[system] == direct[name])
    _draft_together(mlxq_url, server_url, rounds, result)
    return result


def _draft_together(mlxq_url: str, server_url: str, rounds: int, result: DraftResult) -> None:
    """8 at once with the draft model: mlxq (its rows ask the draft model together) against
    mlx_lm.server (which stops batching with a draft model); mlxq's texts compared with its
    own without the draft model (``"speculative": false``, plain decoding, same batch)."""
    questions = concurrent_questions()
    plain, _ = asyncio.run(_together(mlxq_url, questions, False))
    for round_index in trange(rounds, desc="draft model, 8 at once", unit="round", leave=False):
        for system in ("mlxq", "server") if round_index % 2 == 0 else ("server", "mlxq"):
            if system == "mlxq":
                answers, wall = asyncio.run(_together(mlxq_url, questions, True))
                tokens = sum(a.completion_tokens for a in answers)
                same = sum(a.text == p.text for a, p in zip(answers, plain, strict=True))
                result.concurrent_same.append(same)
            else:
                tokens, wall = asyncio.run(_server_together(server_url, questions))
            result.concurrent[system].append(tokens / wall)


async def _server_together(url: str, questions: list[str]) -> tuple[int, float]:
    """Completion tokens of ``questions`` sent at once to mlx_lm.server, and the wall time."""

    async def ask(client: httpx.AsyncClient, question: str) -> int:
        body = {
            "messages": [{"role": "user", "content": question}],
            "max_tokens": CONCURRENT_TOKENS,
            "temperature": 0.0,
        }
        response = await client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        tokens = await asyncio.gather(*(ask(client, q) for q in questions))
        return sum(tokens), time.perf_counter() - started


def render_draft(result: DraftResult, lookup: SpeculationResult, rounds: int) -> str:
    direct = {r.name: median(r.tps["direct"]) for r in lookup.prompts}
    rows = []
    for name in DRAFT_PROMPTS:
        mlxq, server = result.tps[name]["mlxq"], result.tps[name]["server"]
        rows.append(
            [
                name,
                spread(mlxq),
                spread(server),
                f"{median(mlxq) / direct[name]:.2f}x",
                f"{median(server) / direct[name]:.2f}x",
                f"{median([m / s for m, s in zip(mlxq, server, strict=True)]):.2f}x",
                f"{median(result.acceptance[name]):.2f}",
                f"{sum(result.same_text[name]['mlxq'])} / {sum(result.same_text[name]['server'])}",
            ]
        )
    return "\n".join(
        [
            "### With a draft model: mlxq against `mlx_lm.server --draft-model`",
            "",
            f"The draft model is the demo model's first {DRAFT_LAYERS} of 30 layers with its "
            "embedding, norm, head and tokenizer (`bench/draft_model.py`): the only draft "
            "with the demo model's tokenizer that can be made offline, an untrained early exit. "
            f"Both guess {DRAFT_TOKENS} tokens at first (mlx_lm.server's `num_draft_tokens`; "
            "mlxq then sizes its guesses by their acceptance) ; mlxq tries prompt lookup "
            "first and asks the draft model only where it finds nothing. Each prompt alone, "
            f'greedy, max_tokens {MAX_TOKENS}, {rounds} rounds; "/ direct" is against the '
            "direct mlx-lm medians above.",
            "",
            table(
                [
                    "prompt",
                    "mlxq + draft tokens/s",
                    "mlx_lm.server + draft",
                    "mlxq / direct",
                    "server / direct",
                    "mlxq / server",
                    "drafts accepted (mlxq)",
                    f"same text as direct mlx-lm, of {rounds}: mlxq / server",
                ],
                rows,
            ),
            "",
            *_render_draft_together(result),
        ]
    )


def _render_draft_together(result: DraftResult) -> list[str]:
    if not result.concurrent["mlxq"]:
        return []
    mlxq, server = result.concurrent["mlxq"], result.concurrent["server"]
    ratios = [m / s for m, s in zip(mlxq, server, strict=True)]
    return [
        f"**8 at once with the draft model** (the 8 above, max_tokens {CONCURRENT_TOKENS}), "
        f"aggregate tokens/s: mlxq {spread(mlxq)}, mlx_lm.server {spread(server)}; mlxq / "
        f"server = {median(ratios):.2f}x ({spread(ratios, 2)}). mlxq's rows ask the draft "
        "model together, and only when its guesses are expected to pay for its passes (this "
        "draft weighs 0.37 of the model; worker/batch_speculation.py); mlx_lm.server runs one "
        "request at a time with a draft model. Same text as mlxq without speculation: "
        f"{', '.join(f'{s} of 8' for s in result.concurrent_same)}.",
        "",
    ]


def _ratios(record: PromptResult, over: str) -> list[float]:
    return [s / o for s, o in zip(record.tps["speculative"], record.tps[over], strict=True)]


def render(
    result: SpeculationResult, draft: DraftResult | None, rounds: int
) -> tuple[str, list[list[str]]]:
    rows = []
    for record in result.prompts:
        rows.append(
            [
                record.name,
                "copy-heavy" if record.copy_heavy else "free writing",
                spread(record.tps["speculative"]),
                spread(record.tps["plain"]),
                spread(record.tps["direct"]),
                f"{median(_ratios(record, 'direct')):.2f}x",
                f"{median(record.acceptance):.2f}",
                f"{sum(record.same_text)} of {rounds}",
            ]
        )
    copy = [median(_ratios(r, "direct")) for r in result.prompts if r.copy_heavy]
    free = [median(_ratios(r, "direct")) for r in result.prompts if not r.copy_heavy]
    copy_same = all(all(r.same_text) for r in result.prompts if r.copy_heavy)
    concurrent = [
        s / p
        for s, p in zip(result.concurrent["speculative"], result.concurrent["plain"], strict=True)
    ]
    copy_verdict = verdict(median(copy), COPY_TARGET, higher_is_better=True)
    if not copy_same:
        copy_verdict += " (but not every text was identical)"
    summary = [
        [
            "(m) lone copy-heavy request, mlxq / direct mlx-lm tokens/s (same text)",
            f">= {COPY_TARGET}x",
            f"{median(copy):.2f}x",
            copy_verdict,
        ],
        [
            "(m) lone free-writing request, mlxq / direct mlx-lm tokens/s",
            f">= {FREE_TARGET}x",
            f"{median(free):.2f}x",
            verdict(median(free), FREE_TARGET, higher_is_better=True),
        ],
        [
            "(m) 8 concurrent mixed requests, speculation on / off",
            f">= {CONCURRENT_TARGET}x",
            f"{median(concurrent):.2f}x",
            verdict(median(concurrent), CONCURRENT_TARGET, higher_is_better=True),
        ],
    ]
    parts = [
        "## (m) Speculative decoding: mlxq against direct mlx-lm",
        "",
        f"Each prompt alone, greedy, max_tokens {MAX_TOKENS}, chat template, {rounds} rounds "
        "(the three systems in a rotating order); tokens/s = completion tokens / wall time of "
        "the whole request (prefill included; HTTP included for mlxq). mlxq counts its tokens "
        "in its streamed `done` event. Median (min-max) over rounds; the ratio is the median "
        "of the rounds' ratios.",
        "",
        table(
            [
                "prompt",
                "set",
                "mlxq tokens/s",
                'mlxq `"speculative": false`',
                "direct mlx-lm",
                "mlxq / direct",
                "drafts accepted",
                "same text (all three)",
            ],
            rows,
        ),
        "",
        f"**Copy-heavy set, mlxq / direct mlx-lm: {median(copy):.2f}x** (median of its prompts' "
        f"ratios; each prompt's: {', '.join(f'{c:.2f}' for c in copy)}): target >= "
        f"{COPY_TARGET}x with identical text: {copy_verdict}",
        "",
        f"**Free writing, mlxq / direct mlx-lm: {median(free):.2f}x** "
        f"({', '.join(f'{f:.2f}' for f in free)}): target >= {FREE_TARGET}x: "
        f"{verdict(median(free), FREE_TARGET, higher_is_better=True)}",
        "",
        f"**8 at once** (4 copy-heavy, 4 free writing, max_tokens {CONCURRENT_TOKENS}), "
        "aggregate tokens/s: with speculation "
        f"{spread(result.concurrent['speculative'])}, without "
        f"{spread(result.concurrent['plain'])}; on / off = {median(concurrent):.2f}x "
        f"({spread(concurrent, 2)}): target >= {CONCURRENT_TARGET}x: "
        f"{verdict(median(concurrent), CONCURRENT_TARGET, higher_is_better=True)}. Same text "
        f"on and off: {', '.join(f'{s} of 8' for s in result.concurrent_same)}.",
        "",
        render_draft(draft, result, rounds) if draft is not None else "",
        "**What this shows.** A forward pass over a few tokens costs little more than over one "
        "(on this CPU, 8 tokens about 1.5x one token), so every accepted draft token is "
        "nearly free. The demo model (135M parameters) copies less faithfully than the models "
        "people run (it drops words, reorders lists), which lowers the acceptance rates here; "
        "a 7B model editing code copies long runs. Free writing still finds a few repeated "
        "phrases, and a sequence whose drafts fail stops drafting for a while, so it pays "
        "little. 8 at once: a batch checks drafts only when the expected accepted tokens pay "
        "for every row's extra positions and for rolling the KV cache rows "
        "(worker/batch_speculation.py); with 4 free-writing rows that is rare, so on and off "
        "are close. With a draft model, mlx_lm.server asks it at every step (and stops "
        "batching); mlxq asks it only where prompt lookup finds nothing, and pauses it after "
        "guesses that gained nothing, so a poor draft costs mlxq little.",
        "",
        "**What is missed.** No trained draft model: none with the demo model's tokenizer can "
        "be had offline, so the draft-model comparison uses an untrained early exit, which "
        "guesses poorly; it shows the two ways of using one, not what a good one gains. One "
        "machine (2-core CPU); on Apple silicon a forward pass of several tokens costs "
        "relatively less still, and KV rows move faster.",
    ]
    return "\n".join(parts) + "\n", summary
