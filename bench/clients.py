"""How the benchmark talks to each system under test, and how it counts tokens."""

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tokenizers import Tokenizer

REQUEST_TIMEOUT_S = 300


@dataclass
class Answer:
    text: str
    completion_tokens: int  # as the system reports it, or counted by the tokenizer (mlxq)
    seconds: float  # the whole request, as its client sees it


class TokenCounter:
    """Counts an answer's tokens by encoding it again (mlxq's /ask returns text only).

    The tokenizer is the model's own ``tokenizer.json``; loaded with ``tokenizers`` so the
    bench process never imports MLX (it must not compete for the BLAS threads)."""

    def __init__(self, model: Path) -> None:
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class DirectMLX:
    """The direct mlx-lm baseline process (bench/direct_mlx.py), one request at a time."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"direct mlx-lm did not start: {ready}")

    def ask(self, question: str, max_tokens: int) -> Answer:
        reply = self.request(question, max_tokens)
        return Answer(reply["text"], reply["completion_tokens"], reply["seconds"])

    def request(self, question: str, max_tokens: int) -> dict:
        """The process's whole reply (bench/direct_mlx.py lists its fields)."""
        line = json.dumps({"question": question, "max_tokens": max_tokens})
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # the process is killed on timeout by run.py
        if not line:
            log = Path(self._process.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
            raise RuntimeError(f"direct mlx-lm exited:\n{log}")
        return json.loads(line)


def ask_mlxq(client: httpx.Client, question: str, max_tokens: int, counter: TokenCounter) -> Answer:
    started = time.perf_counter()
    response = client.post("/ask", json={"question": question, "max_tokens": max_tokens})
    seconds = time.perf_counter() - started
    response.raise_for_status()
    text = response.json()["answer"]
    return Answer(text, counter.count(text), seconds)


@dataclass
class FirstPiece:
    seconds: float  # request sent -> first piece of text received
    text: str  # that piece
    answer: str  # the whole answer (event: done)


def first_piece_mlxq(client: httpx.Client, question: str, max_tokens: int) -> FirstPiece:
    """A streaming /ask, read to its end; timed up to the first text event's first data line."""
    body = {"question": question, "max_tokens": max_tokens, "stream": True}
    started = time.perf_counter()
    first_at, first, event, data = None, None, None, []
    with client.stream("POST", "/ask", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                if first_at is None and event is None:
                    first_at = time.perf_counter()
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif not line and data:  # the end of one event
                if event == "done":
                    answer = json.loads("\n".join(data))["answer"]
                    if first is None or first_at is None:
                        raise RuntimeError(f"no text event before done: {answer!r}")
                    return FirstPiece(first_at - started, first, answer)
                if event == "error":
                    raise RuntimeError(f"mlxq stream error: {data}")
                if first is None:
                    first = "\n".join(data)
                event, data = None, []
    raise RuntimeError("the stream ended without event: done")


async def ask_mlxq_async(
    client: httpx.AsyncClient, question: str, max_tokens: int, counter: TokenCounter
) -> Answer:
    started = time.perf_counter()
    response = await client.post("/ask", json={"question": question, "max_tokens": max_tokens})
    seconds = time.perf_counter() - started
    response.raise_for_status()
    text = response.json()["answer"]
    return Answer(text, counter.count(text), seconds)


async def ask_mlx_server_async(
    client: httpx.AsyncClient, question: str, max_tokens: int, counter: TokenCounter
) -> Answer:
    body = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    payload = response.json()
    text = payload["choices"][0]["message"]["content"]
    return Answer(text, payload["usage"]["completion_tokens"], seconds)


async def fire_together(
    base_url: str, ask, questions: list[str], max_tokens: int, counter: TokenCounter
) -> tuple[list[Answer], float]:
    """All questions at once from one client; wall time from first send to last answer."""
    limits = httpx.Limits(max_connections=len(questions) + 4)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(*(ask(client, q, max_tokens, counter) for q in questions))
        return list(answers), time.perf_counter() - started
