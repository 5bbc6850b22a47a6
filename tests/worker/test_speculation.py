"""Speculative decoding changes how fast text comes, never which text: greedy and seeded
answers equal plain decoding's (alone, constrained, with stop strings and logprobs, when a lone
stream joins a batch, in a batch of mixed sequences, with a draft model), and sampled tokens
keep their distribution (a chi-square test on a tiny model whose exact distribution is
computed)."""

import json
import math
import queue
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache

from bench.draft_model import make_layer_draft
from shared.errors import Cancelled, JobTimedOut
from shared.schemas import (
    ChatMessage,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
)
from shared.settings import Settings
from worker import batch_speculation
from worker.draft_model import guess_together, load_draft_model
from worker.engine_api import Failed, Finished, TokenOutput
from worker.mlx_engine import MLXEngine
from worker.model import LoadedModel
from worker.prompt_lookup import MAX_DRAFT_TOKENS, DraftBudget, Drafter, PromptLookup
from worker.sampling import RequestSampler
from worker.sequence import Sequence, SequenceSpec
from worker.speculative_stream import SpeculativeStream
from worker.startup_error import StartupError

COPY = (
    "Repeat this sentence exactly, word for word: The quick brown fox jumps over the lazy "
    "dog. Pack my box with five dozen liquor jugs."
)
LIST = (
    "Write the list again, with each item on its own line: apples, oranges, bananas, "
    "pears, grapes, plums, cherries, lemons."
)
FREE = "Write a short poem about the sea."


# -- the draft source ----------------------------------------------------------------------


def test_lookup_continues_the_latest_earlier_occurrence_of_the_longest_suffix() -> None:
    lookup = PromptLookup([5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 6, 7])
    assert lookup.propose(3) == [2, 3, 6]  # (6, 7) last occurred before 2, 3
    lookup.extend([2])  # now (6, 7, 2) matches: the longer suffix decides
    assert lookup.propose(8) == [3, 6, 7, 2]  # no further than the context goes


def test_lookup_proposes_nothing_without_an_earlier_match() -> None:
    lookup = PromptLookup([1, 2, 3, 4])
    assert lookup.propose(4) == []
    lookup.extend([4])  # a single repeated token is not enough of a match
    assert lookup.propose(4) == []
    assert PromptLookup([1, 2, 1, 2]).propose(0) == []


def test_draft_length_follows_acceptance_and_pauses_after_misses() -> None:
    budget = DraftBudget()
    first = budget.next_length()
    budget.record(first, first)
    assert budget.next_length() == min(MAX_DRAFT_TOKENS, first * 2)
    budget.record(budget.length, 1)
    assert budget.next_length() == 2  # what was accepted, plus one
    budget.record(2, 0)
    budget.record(1, 0)  # a second miss in a row: drafting pauses
    assert [budget.next_length() for _ in range(5)] == [0, 0, 0, 0, 1]


class RecordingGuesser:
    """A draft model's stand-in: guesses 7s, and remembers what it was told was kept."""

    def __init__(self) -> None:
        self.kept_counts: list[int] = []

    def propose(self, context: list[int], limit: int) -> list[int]:
        return [7] * limit

    def kept(self, accepted: int) -> None:
        self.kept_counts.append(accepted)


def test_a_draft_model_is_asked_only_where_lookup_finds_nothing_and_told_what_was_kept() -> None:
    guesser = RecordingGuesser()
    drafter = Drafter([1, 2, 3, 1, 2], guesser)
    assert drafter.propose([1, 2, 3, 1, 2], 4) == [3, 1, 2]  # the prompt has it
    drafter.record(3, 3)
    assert drafter.propose([1, 2, 3, 1, 2, 3, 1, 2, 9], 4) == [7, 7, 7]  # it has not
    drafter.record(0, 0)  # a grammar cut the whole guess: the draft model still hears of it
    assert guesser.kept_counts == [0]
    assert drafter.propose([1, 2, 3, 1, 2, 3, 1, 2, 9, 5], 4, guess=False) == []  # a batch


# -- the engine on the demo model ------------------------------------------------------------


class Engines:
    """Two MLX engines on the demo model, with and without speculation; no prefix cache, so
    each answer is decoded from scratch."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.outputs: queue.Queue = queue.Queue()
        self._engines = {
            on: MLXEngine(
                Settings(worker_concurrency=8, prefix_cache_bytes=0, speculation=on),
                self.outputs.put,
                loaded=loaded,
            )
            for on in (False, True)
        }
        for engine in self._engines.values():
            engine.start()
        self._next = 0
        self._plain: dict[tuple[str, str], Finished] = {}

    def submit(self, speculation: bool, question: str, **fields: Any) -> str:
        """A chat job of one user message; returns its job id."""
        self._next += 1
        job_id = f"j{self._next}"
        engine = self._engines[speculation]
        fields.setdefault("max_tokens", 40)
        request = GenerationRequest(
            request_id=job_id,
            model=engine.model_id,
            messages=[ChatMessage(role="user", content=question)],
            deadline=time.time() + 300,
            **fields,
        )
        engine.submit(engine.prepare(job_id, request, 300))
        return job_id

    def cancel(self, speculation: bool, job_id: str) -> None:
        self._engines[speculation].cancel(job_id)

    def results(self, job_ids: list[str]) -> dict[str, Finished]:
        done: dict[str, Finished] = {}
        while len(done) < len(job_ids):
            output = self.outputs.get(timeout=240)
            if isinstance(output, TokenOutput):
                continue
            assert not isinstance(output, Failed), output.error
            done[output.job_id] = output
        return done

    def ask(self, speculation: bool, question: str, **fields: Any) -> Finished:
        """The answer; plain decoding's, the reference many tests compare with, is computed
        once per question and fields."""
        key = (question, repr(sorted(fields.items())))
        if not speculation and key in self._plain:
            return self._plain[key]
        job_id = self.submit(speculation, question, **fields)
        answer = self.results([job_id])[job_id]
        if not speculation:
            self._plain[key] = answer
        return answer

    def stop(self) -> None:
        for engine in self._engines.values():
            engine.stop()


@pytest.fixture(scope="module")
def engines(demo_model: LoadedModel):
    started = Engines(demo_model)
    yield started
    started.stop()


@pytest.mark.parametrize("question", [COPY, LIST, FREE])
def test_greedy_answers_are_plain_decodings(engines: Engines, question: str) -> None:
    plain = engines.ask(False, question)
    fast = engines.ask(True, question)
    assert fast.choices[0].text == plain.choices[0].text
    assert plain.speculation is None
    assert fast.speculation is not None
    if question != FREE:  # the copy is guessed, and the guesses are right
        assert fast.speculation.accepted >= 3
        assert fast.speculation.acceptance_rate is not None
        assert fast.speculation.acceptance_rate >= 0.3


def test_a_request_can_turn_it_off(engines: Engines) -> None:
    answer = engines.ask(True, COPY, speculative=False)
    assert answer.speculation is None
    assert answer.choices[0].text == engines.ask(True, COPY).choices[0].text


def test_seeded_sampling_gives_the_same_text(engines: Engines) -> None:
    sampling = SamplingParams(temperature=0.7, seed=11)
    plain = engines.ask(False, COPY, sampling=sampling)
    fast = engines.ask(True, COPY, sampling=sampling)
    assert fast.speculation is not None and fast.speculation.accepted > 0
    assert fast.choices[0].text == plain.choices[0].text


def test_cancel_and_deadline_stop_a_speculative_stream(engines: Engines) -> None:
    """Both act between steps: the job ends with its error, and the engine goes on."""
    job_id = engines.submit(True, LIST, max_tokens=200, stream=True)
    first = engines.outputs.get(timeout=60)  # a token is out: the stream is running
    assert isinstance(first, TokenOutput), first
    engines.cancel(True, job_id)
    while not isinstance(ended := engines.outputs.get(timeout=60), Failed | Finished):
        pass
    assert isinstance(ended, Failed) and isinstance(ended.error, Cancelled), ended
    engine = engines._engines[True]
    request = GenerationRequest(
        request_id="late",
        model=engine.model_id,
        messages=[ChatMessage(role="user", content="Write a long story about a dragon.")],
        max_tokens=400,
        deadline=time.time() + 300,
    )
    engine.submit(engine.prepare("late", request, 1.5))  # its time runs out while generating
    while not isinstance(ended := engines.outputs.get(timeout=60), Failed | Finished):
        pass
    assert isinstance(ended, Failed) and isinstance(ended.error, JobTimedOut), ended
    assert ended.error.partial  # the text generated before the deadline
    # the engine serves the next request as before
    assert engines.ask(True, COPY).choices[0].text == engines.ask(False, COPY).choices[0].text


def test_stop_strings_and_logprobs(engines: Engines) -> None:
    fields: dict[str, Any] = {"stop": ["liquor"], "logprobs": 2}
    plain = engines.ask(False, COPY, **fields).choices[0]
    fast = engines.ask(True, COPY, **fields).choices[0]
    assert fast.text == plain.text and "liquor" not in fast.text
    assert fast.finish_reason == plain.finish_reason == "stop"
    assert plain.logprobs is not None and fast.logprobs is not None
    assert [e.token for e in fast.logprobs] == [e.token for e in plain.logprobs]
    for a, b in zip(fast.logprobs, plain.logprobs, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
        assert [t.token for t in a.top_logprobs] == [t.token for t in b.top_logprobs]


def test_constrained_answers_follow_the_grammar(engines: Engines) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array"}},
        "required": ["name", "tags"],
    }
    question = 'Copy this JSON: {"name": "quick brown fox", "tags": ["fox", "dog", "fox", "dog"]}'
    fields = {
        "response_format": ResponseFormat(type="json_schema", json_schema={"schema": schema}),
        "max_tokens": 48,
    }
    plain = engines.ask(False, question, **fields).choices[0]
    fast = engines.ask(True, question, **fields)
    assert fast.choices[0].text == plain.text
    assert fast.speculation is not None and fast.speculation.accepted > 0
    if fast.choices[0].finish_reason == "stop":
        assert set(json.loads(fast.choices[0].text)) >= {"name", "tags"}


def test_a_lone_stream_joins_a_batch_without_changing_a_token(engines: Engines) -> None:
    """The first request decodes speculatively alone; the others arrive while it runs and
    it moves into the batch (its KV cache holds all but its last token)."""
    questions = [COPY, LIST, FREE, COPY + " Then stop.", "Name three colours."]
    plain = {q: engines.ask(False, q).choices[0].text for q in questions}
    first = engines.submit(True, questions[0])
    time.sleep(1.0)  # some of its tokens are out
    rest = [engines.submit(True, q) for q in questions[1:]]
    answers = engines.results([first, *rest])
    for job_id, question in zip([first, *rest], questions, strict=True):
        assert answers[job_id].choices[0].text == plain[question], question
    assert answers[first].speculation is not None


MIXED = [COPY, LIST, FREE, "Name three colours.", COPY + " Then stop.", "What is 2 + 2?"]


def run_together(engines: Engines, speculation: bool, requests: list[dict]) -> list[Finished]:
    job_ids = [engines.submit(speculation, **fields) for fields in requests]
    answers = engines.results(job_ids)
    return [answers[job_id] for job_id in job_ids]


def test_a_batch_of_mixed_sequences_gives_plain_answers(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight at once, some copying, some not, one seeded and sampled, one constrained; every
    draft is checked (costs set to nothing), so rows keep different numbers of tokens at
    every step and the batch's cache is rolled row by row."""
    monkeypatch.setattr(batch_speculation, "POSITION_COST", 0.0)
    monkeypatch.setattr(batch_speculation, "ROLL_COST", 0.0)
    requests: list[dict] = [{"question": q} for q in MIXED]
    requests.append({"question": COPY, "sampling": SamplingParams(temperature=0.8, seed=5)})
    requests.append({"question": LIST, "response_format": ResponseFormat(type="json_object")})
    plain = run_together(engines, False, requests)
    fast = run_together(engines, True, requests)
    assert [a.choices[0].text for a in fast] == [a.choices[0].text for a in plain]
    assert sum(a.speculation.accepted for a in fast if a.speculation) >= 10


def test_a_batch_speculates_where_it_pays(engines: Engines) -> None:
    """With the measured costs, two copying sequences draft together."""
    fast = run_together(engines, True, [{"question": COPY}, {"question": LIST}])
    assert all(a.speculation is not None and a.speculation.accepted > 0 for a in fast)


# -- a draft model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def draft_folder(demo_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's first 6 of 30 layers: a draft model with its tokenizer."""
    return make_layer_draft(demo_model.path, tmp_path_factory.mktemp("draft") / "six", 6)


def test_a_draft_model_guesses_where_lookup_cannot(
    engines: Engines, demo_model: LoadedModel, draft_folder: Path, cache_dir: Path
) -> None:
    settings = Settings(prefix_cache_bytes=0, draft_model=str(draft_folder), cache_dir=cache_dir)
    draft = load_draft_model(settings, demo_model, is_default=True)
    assert draft is not None
    outputs: queue.Queue = queue.Queue()
    engine = MLXEngine(settings, outputs.put, loaded=demo_model, draft=draft)
    engine.start()
    try:
        for question in (FREE, COPY):
            request = GenerationRequest(
                request_id="d",
                model=engine.model_id,
                messages=[ChatMessage(role="user", content=question)],
                max_tokens=40,
                deadline=time.time() + 300,
            )
            engine.submit(engine.prepare("d", request, 300))
            while not isinstance(answer := outputs.get(timeout=240), Finished):
                assert not isinstance(answer, Failed), answer.error
            lookup_only = engines.ask(True, question)
            assert answer.choices[0].text == engines.ask(False, question).choices[0].text
            assert answer.speculation is not None and lookup_only.speculation is not None
            # the draft model guessed where the prompt had nothing to copy
            assert answer.speculation.proposed > lookup_only.speculation.proposed
    finally:
        engine.stop()


def test_guesses_together_are_the_guesses_alone(
    demo_model: LoadedModel, draft_folder: Path, cache_dir: Path
) -> None:
    """Rows of different lengths (one new, with nothing fed yet) guess in one pass per token
    what each guesses alone, step after step, as kept guesses are cut back differently."""
    settings = Settings(draft_model=str(draft_folder), cache_dir=cache_dir)
    draft = load_draft_model(settings, demo_model, is_default=True)
    assert draft is not None and 0 < draft.cost < 1
    tokenizer = demo_model.tokenizer
    contexts = [tokenizer.encode(q) for q in (COPY, FREE, "Name three colours.")]
    together = [draft.session() for _ in contexts]
    alone = [draft.session() for _ in contexts]
    for step, (limits, kept) in enumerate([([3, 2, 3], [1, 0, 3]), ([2, 3, 1], [2, 3, 0])]):
        guesses = guess_together(together, contexts, limits)
        one_by_one = zip(alone, contexts, limits, strict=True)
        assert guesses == [s.propose(c, n) for s, c, n in one_by_one], step
        for i, accepted in enumerate(kept):
            together[i].kept(accepted)
            alone[i].kept(accepted)
            # the context grows by what was kept and the model's own next token
            contexts[i] = contexts[i] + guesses[i][:accepted] + [tokenizer.encode(" a")[-1]]


def test_a_batch_asks_the_draft_model_for_every_row_at_once(
    engines: Engines,
    demo_model: LoadedModel,
    draft_folder: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows with nothing to copy have the draft model guess, together; answers stay plain
    decoding's (costs set to nothing, so every guess is checked)."""
    monkeypatch.setattr(batch_speculation, "POSITION_COST", 0.0)
    monkeypatch.setattr(batch_speculation, "ROLL_COST", 0.0)
    rows_asked: list[int] = []

    def recorded(sessions, contexts, limits):  # noqa: ANN001, ANN202
        rows_asked.append(len(sessions))
        return guess_together(sessions, contexts, limits)

    monkeypatch.setattr(batch_speculation, "guess_together", recorded)
    folder = str(draft_folder)
    settings = Settings(
        worker_concurrency=8, prefix_cache_bytes=0, draft_model=folder, cache_dir=cache_dir
    )
    draft = load_draft_model(settings, demo_model, is_default=True)
    assert draft is not None
    draft.cost = 0.0
    outputs: queue.Queue = queue.Queue()
    engine = MLXEngine(settings, outputs.put, loaded=demo_model, draft=draft)
    questions = [FREE, "Name three colours.", "What is 2 + 2?", LIST]
    plain = {q: engines.ask(False, q).choices[0].text for q in questions}
    jobs = {}
    for i, question in enumerate(questions):
        request = GenerationRequest(
            request_id=f"b{i}",
            model=engine.model_id,
            messages=[ChatMessage(role="user", content=question)],
            max_tokens=40,
            deadline=time.time() + 300,
        )
        jobs[f"b{i}"] = question
        engine.submit(engine.prepare(f"b{i}", request, 300))  # queued before it starts
    engine.start()
    try:
        answers: dict[str, Finished] = {}
        while len(answers) < len(jobs):
            output = outputs.get(timeout=240)
            assert not isinstance(output, Failed), output.error
            if isinstance(output, Finished):
                answers[output.job_id] = output
    finally:
        engine.stop()
    for job_id, question in jobs.items():
        assert answers[job_id].choices[0].text == plain[question], question
    assert max(rows_asked) >= 2, rows_asked
    assert sum(a.speculation.accepted for a in answers.values() if a.speculation) > 0


def test_a_draft_model_with_another_tokenizer_is_refused(
    demo_model: LoadedModel, draft_folder: Path, tmp_path: Path, cache_dir: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(draft_folder, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["mlxq-not-a-token"] = vocab.pop(next(iter(vocab)))
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    settings = Settings(draft_model=str(other), cache_dir=cache_dir)
    with pytest.raises(StartupError, match="does not share the tokenizer"):
        load_draft_model(settings, demo_model, is_default=True)
    # another model of a worker with models on demand is served without the draft
    assert load_draft_model(settings, demo_model, is_default=False) is None


# -- the distribution of sampled tokens --------------------------------------------------------

VOCAB = 8
PROMPT = [1, 2, 3, 1, 2, 3, 1, 2]
"""Its suffix (1, 2) occurred before, followed by 3: every first step drafts."""
SAMPLES = 3000


@pytest.fixture(scope="module")
def tiny_model() -> Any:
    mx.random.seed(3)
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=32,
        num_hidden_layers=1,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=VOCAB,
        tie_word_embeddings=True,
    )
    model = llama.Model(args)  # P(3 | PROMPT) is 0.17: drafts are kept, and rejected
    mx.eval(model.parameters())
    return model


def exact_pairs(model: Any) -> dict[tuple[int, int], float]:
    """P(first two tokens) after PROMPT, from the model's distributions."""
    first = mx.softmax(model(mx.array([PROMPT]))[0, -1]).tolist()
    pairs = {}
    for a in range(VOCAB):
        second = mx.softmax(model(mx.array([PROMPT + [a]]))[0, -1]).tolist()
        for b in range(VOCAB):
            pairs[(a, b)] = first[a] * second[b]
    return pairs


def sample_pair(model: Any) -> tuple[tuple[int, int], int]:
    """Two tokens sampled speculatively at temperature 1; also how many drafts were kept."""
    sequence = Sequence(
        "job",
        0,
        PROMPT,
        2,
        detokenizer=None,
        sampler=RequestSampler(SamplingParams(temperature=1.0)),
        processors=[],
        spec=SequenceSpec(stops=[], channels=lambda: None),
        drafter=Drafter(PROMPT),
    )
    stream = SpeculativeStream(model, sequence, make_prompt_cache(model), 0)
    while len(sequence.tokens) < 2:
        sequence.tokens += [token for token, _ in stream.step()]
    first, second = sequence.tokens[:2]
    return (first, second), sequence.accepted


def chi_square_limit(df: int, z: float = 3.72) -> float:
    """The chi-square value exceeded with probability ~1e-4 (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_sampled_tokens_keep_their_distribution(tiny_model: Any) -> None:
    expected = exact_pairs(tiny_model)
    mx.random.seed(7)
    counts: Counter[tuple[int, int]] = Counter()
    kept = 0
    for _ in range(SAMPLES):
        pair, accepted = sample_pair(tiny_model)
        counts[pair] += 1
        kept += accepted
    assert 0.05 * SAMPLES < kept < 0.95 * SAMPLES  # both the kept and the rejected path ran
    # cells expected fewer than 5 times are pooled into one
    big = [pair for pair, p in expected.items() if p * SAMPLES >= 5]
    observed = [counts[pair] for pair in big] + [SAMPLES - sum(counts[p] for p in big)]
    wanted = [expected[pair] * SAMPLES for pair in big]
    wanted.append(SAMPLES - sum(wanted))
    chi_square = sum((o - e) ** 2 / e for o, e in zip(observed, wanted, strict=True) if e > 0)
    assert chi_square < chi_square_limit(len(wanted) - 1), chi_square
