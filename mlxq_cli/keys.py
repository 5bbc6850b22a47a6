"""``mlxq keys`` and ``mlxq usage``: the API keys and what each used, straight from Redis
(like ``mlxq status``); the records are shared/api_keys.py's and shared/usage.py's."""

import datetime as dt
import sys
from argparse import Namespace

import redis
from pydantic import ValidationError

from shared.api_keys import KeyProblem, KeyRecord, create_key, list_keys, revoke_key, rotate_key
from shared.redis_clients import command_client
from shared.settings import get_settings, without_password
from shared.usage import read_usage, today, totals

DEFAULT_USAGE_DAYS = 30


def keys(args: Namespace) -> int:
    """create / list / revoke / rotate; a new secret is printed once, as the last line."""
    settings = get_settings()
    connection = command_client(settings.redis_url, connect_timeout_s=2.0)
    try:
        return _keys(connection, args)
    except KeyProblem as exc:
        print(f"mlxq keys: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        where = without_password(settings.redis_url)
        print(f"mlxq keys: cannot reach Redis at {where}: {exc}", file=sys.stderr)
        return 1


def _keys(connection: redis.Redis, args: Namespace) -> int:
    if args.keys_command == "create":
        try:
            record = KeyRecord(
                name=args.name,
                admin=args.admin,
                rpm=args.rpm,
                tpm=args.tpm,
                max_concurrent=args.max_concurrent,
                files_bytes=args.files_bytes,
                models=tuple(m.strip() for m in args.models.split(",") if m.strip())
                if args.models
                else None,
                weight=args.weight,
            )
        except ValidationError as exc:
            raise KeyProblem(_problems(exc)) from None
        secret = create_key(connection, record)
        print(f"Made key {args.name!r}. Its secret is shown this once; keep it:")
        print(secret)
    elif args.keys_command == "rotate":
        secret = rotate_key(connection, args.name)
        print(f"Key {args.name!r} has a new secret (the old one no longer works); keep it:")
        print(secret)
    elif args.keys_command == "revoke":
        revoke_key(connection, args.name)
        print(f"Key {args.name!r} is revoked: every API process refuses it within a second.")
    else:
        _print_keys(list_keys(connection))
    return 0


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _print_keys(records: list[KeyRecord]) -> None:
    def limit(value: int | None) -> str:
        return "-" if value is None else str(value)

    rows = [["name", "admin", "rpm", "tpm", "concurrent", "files bytes", "models", "weight"]]
    rows[0] += ["created", "revoked"]
    for r in records:
        rows.append(
            [
                r.name,
                "yes" if r.admin else "no",
                limit(r.rpm),
                limit(r.tpm),
                limit(r.max_concurrent),
                limit(r.files_bytes),
                ",".join(r.models) if r.models is not None else "all",
                str(r.weight),
                _when(r.created_at),
                _when(r.revoked_at) if r.revoked_at is not None else "-",
            ]
        )
    _print_table(rows)


def usage(since: str | None) -> int:
    """Answered requests and tokens per key and day, then per key in all."""
    settings = get_settings()
    connection = command_client(settings.redis_url, connect_timeout_s=2.0)
    try:
        first = (
            dt.date.fromisoformat(since)
            if since
            else today() - dt.timedelta(days=DEFAULT_USAGE_DAYS - 1)
        )
    except ValueError:
        print(f"mlxq usage: --since takes a date (YYYY-MM-DD), not {since!r}", file=sys.stderr)
        return 2
    try:
        rows = read_usage(connection, first)
    except redis.RedisError as exc:
        where = without_password(settings.redis_url)
        print(f"mlxq usage: cannot reach Redis at {where}: {exc}", file=sys.stderr)
        return 1
    header = ["day", "key", "requests", "prompt tokens", "completion tokens", "cached tokens"]
    table = [header]
    for row in [*rows, *totals(rows)]:
        table.append(
            [
                row.day,
                row.key,
                str(row.requests),
                str(row.prompt_tokens),
                str(row.completion_tokens),
                str(row.cached_tokens),
            ]
        )
    print(f"usage since {first.isoformat()} (UTC days; the last rows are each key's total)")
    _print_table(table)
    return 0


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
