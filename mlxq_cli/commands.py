"""``mlxq status`` and ``mlxq ask``: small clients of Redis and of the API."""

import json
import sys
import time
from pathlib import Path

import httpx
import redis

from shared.fleet_view import snapshot
from shared.redis_clients import command_client
from shared.settings import Settings, get_settings, without_password
from shared.units import human_bytes


def status(watch: bool = False) -> int:
    """Live workers (host, model, busy slots, tokens/s), queue depths and failed jobs; with
    ``watch``, redrawn in place with sparklines of the last minute (mlxq_cli/watch.py)."""
    settings = get_settings()
    connection = command_client(settings.redis_url, connect_timeout_s=2.0)
    try:
        fleet = snapshot(connection)
    except redis.RedisError as exc:
        print(
            f"mlxq status: cannot reach Redis at {without_password(settings.redis_url)}: {exc}",
            file=sys.stderr,
        )
        return 1
    if watch:
        from mlxq_cli.watch import watch as watch_fleet

        return watch_fleet(connection)
    print(f"workers ({len(fleet['workers'])} live)")
    rows = [["name", "host", "holds", "memory", "busy", "tokens/s", "drafts kept"]]
    for w in fleet["workers"]:
        busy = f"{w['running']}/{w['slots']}"
        holds = ", ".join(
            [_short(h["model"]) for h in w["held"]]
            + [f"{_short(m)} (loading)" for m in w["loading"]]
        )
        memory = f"{human_bytes(w['memory_used'])}/{human_bytes(w['memory_budget'])}"
        rows.append(
            [
                w["name"][:12],
                _host_text(w),
                holds or "-",
                memory,
                busy,
                f"{w['tokens_per_s']:.1f}",
                _drafts_kept(w["draft_tokens_accepted"], w["draft_tokens_proposed"]),
            ]
        )
    _print_table(rows)
    print("\nqueues")
    queue_rows = [["model", "lane", "queued", "failed", "refused", "queue"]]
    for q in fleet["queues"]:
        counts = [str(q[count]) for count in ("queued", "failed", "refused")]
        queue_rows.append([q["model"] or "-", q["lane"], *counts, q["queue"]])
    _print_table(queue_rows)
    if fleet["placement"]:
        print("\nplacement (newest first)")
        for d in fleet["placement"][:8]:
            when = time.strftime("%H:%M:%S", time.localtime(d["at"]))
            print(
                f"  {when}  {d['worker'][:12]}  {d['action']} {_short(d['model'])}: {d['reason']}"
            )
    return 0


def _host_text(worker: dict) -> str:
    """A worker's host; a worker group's hosts, ranks and split."""
    group = worker.get("group")
    if not group:
        return str(worker["host"] or "?")
    return f"{','.join(group['hosts'])} ({group['ranks']} ranks, {group['split']})"


def _drafts_kept(accepted: int, proposed: int) -> str:
    """Speculative decoding's draft tokens accepted of those proposed ("-": none yet)."""
    return f"{accepted}/{proposed} ({100 * accepted // proposed}%)" if proposed else "-"


def _short(model: str) -> str:
    """A model id as a table shows it: its last part (a folder's or a repo's name)."""
    return model.rstrip("/").rsplit("/", 1)[-1]


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def api_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def ask(question: str, max_tokens: int | None, model: str | None) -> int:
    """Stream the answer to the terminal as the worker generates it; ``-`` reads the question
    from standard input. Every failure is one line on stderr (exit 1), never a traceback."""
    if question == "-":
        question = sys.stdin.read().strip()
    settings = get_settings()
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    body: dict = {"question": question, "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if model is not None:
        body["model"] = model
    url = f"{api_url(settings)}/ask"
    started = False
    try:
        with httpx.stream("POST", url, json=body, headers=headers, timeout=None) as response:
            if response.status_code != 200:
                response.read()
                return _fail(f"{_error_message(response)} (HTTP {response.status_code})")
            started = True
            return _print_stream(response)
    except httpx.HTTPError as exc:
        if started:
            return _fail(f"the connection to the API at {url} broke: {exc}", newline=True)
        return _fail(f"cannot reach the API at {url}: {exc}")
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _fail(message: str, newline: bool = False) -> int:
    """One readable line on stderr (after the answer's own line when it was streaming)."""
    print(f"{chr(10) if newline else ''}mlxq ask: {message}", file=sys.stderr)
    return 1


def _error_message(response: httpx.Response) -> str:
    """The API's error as one line: its ``detail``, or each invalid field and why (a 422)."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:]) or 'body'}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        )
    if isinstance(detail, str):
        return detail
    return " ".join(response.text.split())[:300] or response.reason_phrase


def _print_stream(response: httpx.Response) -> int:
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif line == "" and data:
            text = "\n".join(data)
            if event == "error":
                try:
                    detail = json.loads(text)["detail"]
                except (ValueError, KeyError, TypeError):
                    detail = text
                return _fail(str(detail), newline=True)
            if event == "message":
                print(text, end="", flush=True)
            event, data = "message", []
    print()
    return 0


def bench(arguments: list[str]) -> int:
    """Run bench/run.py from a checkout (the benchmark is not part of the installed package)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "run.py"  # a checkout's bench/
    if not script.is_file():
        print("mlxq bench: run it from a clone of the mlxq repository", file=sys.stderr)
        return 1
    import runpy

    sys.argv = [str(script), *arguments]
    runpy.run_path(str(script), run_name="__main__")
    return 0
