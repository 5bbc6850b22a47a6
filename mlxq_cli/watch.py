"""``mlxq status --watch``: the fleet redrawn in place (rich's Live) every 2 s, with sparklines
of the last minute from the fleet's history (shared/history.py, which the web page's charts
read too)."""

import io
import time

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shared.fleet_view import snapshot
from shared.history import read_history

REFRESH_S = 2.0
SPARK_POINTS = 30
"""Points per sparkline: the last minute, at the history's 2 s steps."""
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], points: int = SPARK_POINTS) -> str:
    """The last ``points`` values as bars scaled to their own maximum; a gap is a space."""
    recent = values[-points:]
    top = max((v for v in recent if v is not None), default=0.0)
    return "".join(
        " " if v is None else _BARS[round(v / top * (len(_BARS) - 1)) if top > 0 else 0]
        for v in recent
    )


def _summed(series: list[list[float | None]]) -> list[float | None]:
    """Point by point sum; a point is a gap only where every series has a gap."""
    if not series:
        return []
    return [
        None if all(v is None for v in point) else sum(v or 0 for v in point)
        for point in zip(*series, strict=True)
    ]


def fleet_view(fleet: dict, history: dict, title: str = "") -> Group:
    """One frame: live workers with their tokens/s and queue-depth sparklines, then queues."""
    worker_history = {w["name"]: w for w in history["workers"]}
    queue_history = {q["queue"]: q["queued"] for q in history["queues"]}
    workers = Table(title=f"workers ({len(fleet['workers'])} live)", title_justify="left")
    for column in ("name", "host", "model", "busy", "tokens/s", "tokens/s, last minute"):
        workers.add_column(column, justify="right" if column in ("busy", "tokens/s") else "left")
    workers.add_column("queued, last minute")
    for w in fleet["workers"]:
        past = worker_history.get(w["name"], {})
        queued = _summed([queue_history[q] for q in w["queues"] if q in queue_history])
        workers.add_row(
            w["name"][:12],
            w["host"] or "?",
            w["model"] or "?",
            f"{w['running']}/{w['slots']}",
            f"{w['tokens_per_s']:.1f}",
            sparkline(past.get("tokens_per_s", [])),
            sparkline(queued),
        )
    queues = Table(title="queues", title_justify="left")
    counts = ("queued", "failed", "refused")
    for column in ("model", "lane", *counts, "queued, last minute", "queue"):
        queues.add_column(column, justify="right" if column in counts else "left")
    for q in fleet["queues"]:
        queues.add_row(
            q["model"] or "-",
            q.get("lane", "shared"),
            *(str(q.get(count, 0)) for count in counts),
            sparkline(queue_history.get(q["queue"], [])),
            q["queue"],
        )
    return Group(Text(title, style="dim"), workers, queues)


def render_frame(fleet: dict, history: dict, width: int = 140) -> str:
    """A frame as plain text (what a test or a log can read)."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(fleet_view(fleet, history))
    return console.export_text()


def watch(connection: redis.Redis, console: Console | None = None) -> int:
    """Redraw until Ctrl+C; Redis going away shows in the frame, and the view comes back."""
    with Live(Text("reading the fleet…"), console=console, auto_refresh=False) as live:
        try:
            while True:
                stamp = time.strftime("%H:%M:%S")
                try:
                    view = fleet_view(
                        snapshot(connection),
                        read_history(connection),
                        f"{stamp}, every {REFRESH_S:g} s; Ctrl+C ends",
                    )
                    live.update(view, refresh=True)
                except redis.RedisError as exc:
                    live.update(Text(f"{stamp}: Redis unreachable ({exc})", style="red"))
                    live.refresh()
                time.sleep(REFRESH_S)
        except KeyboardInterrupt:
            return 0
