"""``mlxq batch INPUT.jsonl -o OUTPUT.jsonl``: run a file of requests through the Batch API.

Uploads the file, creates the batch, shows the lines done as a progress bar, and writes the
output (and error) file. Interrupted, it leaves the batch running and says how to re-attach
(``--attach BATCH_ID``); the batch itself lives in Redis, not in this process.
"""

import json
import sys
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from mlxq_cli.commands import api_url
from shared.settings import get_settings

POLL_S = 1.0
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


def run_batch(
    input_path: Path | None,
    output_path: Path,
    attach: str | None,
    endpoint: str | None,
    completion_window: str,
) -> int:
    settings = get_settings()
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    with httpx.Client(base_url=f"{api_url(settings)}/v1", headers=headers, timeout=60) as api:
        try:
            batch_id = attach or _submit(api, input_path, endpoint, completion_window)
            batch = _follow(api, batch_id)
        except httpx.HTTPStatusError as exc:
            print(f"mlxq batch: {_error_message(exc.response)}", file=sys.stderr)
            return 1
        except httpx.HTTPError as exc:
            print(f"mlxq batch: cannot reach the API at {api.base_url}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                f"\nmlxq batch: {batch_id} keeps running; re-attach with "
                f"'mlxq batch --attach {batch_id} -o {output_path}'",
                file=sys.stderr,
            )
            return 130
        return _save(api, batch, output_path)


def _submit(
    api: httpx.Client, input_path: Path | None, endpoint: str | None, completion_window: str
) -> str:
    if input_path is None:
        raise SystemExit("mlxq batch: give an input file, or --attach BATCH_ID")
    content = input_path.read_bytes()
    endpoint = endpoint or _first_url(content)
    upload = api.post(
        "/files", files={"file": (input_path.name, content)}, data={"purpose": "batch"}
    )
    upload.raise_for_status()
    created = api.post(
        "/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": endpoint,
            "completion_window": completion_window,
        },
    )
    created.raise_for_status()
    batch_id = created.json()["id"]
    print(f"mlxq batch: {batch_id} ({endpoint})", file=sys.stderr)
    return batch_id


def _first_url(content: bytes) -> str:
    """The endpoint of the file's first line, when none is given."""
    for line in content.splitlines():
        if line.strip():
            try:
                return json.loads(line)["url"]
            except (ValueError, KeyError, TypeError):
                break
    return "/v1/chat/completions"


def _follow(api: httpx.Client, batch_id: str) -> dict:
    """Poll the batch until it ends, with a bar of lines done."""
    with tqdm(desc=batch_id[:18], unit="line", file=sys.stderr) as bar:
        while True:
            response = api.get(f"/batches/{batch_id}")
            response.raise_for_status()
            batch = response.json()
            counts = batch["request_counts"]
            bar.total = counts["total"]
            bar.n = counts["completed"] + counts["failed"]
            bar.set_postfix(status=batch["status"], failed=counts["failed"], refresh=False)
            bar.refresh()
            if batch["status"] in ENDED:
                return batch
            time.sleep(POLL_S)


def _save(api: httpx.Client, batch: dict, output_path: Path) -> int:
    counts = batch["request_counts"]
    written = []
    for field, path in (
        ("output_file_id", output_path),
        ("error_file_id", output_path.with_suffix(".errors.jsonl")),
    ):
        if batch.get(field):
            content = api.get(f"/files/{batch[field]}/content")
            content.raise_for_status()
            path.write_bytes(content.content)
            written.append(str(path))
    print(
        f"mlxq batch: {batch['status']}: {counts['completed']} answered, {counts['failed']} "
        f"failed of {counts['total']}; wrote {', '.join(written) or 'nothing'}",
        file=sys.stderr,
    )
    return 0 if batch["status"] == "completed" else 1


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
