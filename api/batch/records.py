"""What a batch writes: its output and error files' lines, as OpenAI writes them, and the
OpenAI file object of a file stored now (an upload, or a batch's output)."""

import json
import time
import uuid

from api.batch.lines import BadLine
from api.dialects.openai.render import error_for
from shared.errors import MlxqError


def result_line(job_id: str, custom_id: str, response: dict) -> str:
    """A line of the output (or error) file: the request's response, as OpenAI writes it."""
    return json.dumps(
        {"id": f"batch_req_{job_id}", "custom_id": custom_id, "response": response, "error": None}
    )


def error_line(job_id: str, custom_id: str, request_id: str, exc: MlxqError) -> str:
    """A request that failed, as OpenAI's error file shows it: its status and error body."""
    response = {
        "status_code": exc.http_status,
        "request_id": request_id,
        "body": error_for(exc),
    }
    return result_line(job_id, custom_id, response)


def bad_line_error(line: BadLine) -> str:
    """A line that failed validation, in the error file: no response, the reason."""
    error = {"code": "invalid_request", "message": line.message}
    return json.dumps(
        {
            "id": f"batch_req_line{line.number}",
            "custom_id": line.custom_id,
            "response": None,
            "error": error,
        }
    )


def new_file_meta(filename: str, purpose: str, size: int, ttl_s: int) -> dict:
    """OpenAI's file object for a file stored now."""
    now = int(time.time())
    return {
        "id": f"file-{uuid.uuid4().hex}",
        "object": "file",
        "bytes": size,
        "created_at": now,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": now + ttl_s,
        "status_details": None,
    }
