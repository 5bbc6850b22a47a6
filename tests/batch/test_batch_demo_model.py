"""A batch answered by the real demo model (HTTP -> Redis -> worker -> MLX): each line's
answer is the one the live endpoint gives for the same request (greedy)."""

import io
import json

import openai

from shared.settings import DEMO_MODEL_ID
from tests.batch.test_batch_api import finished, jsonl
from tests.support.processes import Service

QUESTIONS = ["What is the capital of France?", "Name a primary colour."]


def test_batch_answers_match_live_answers(model_service: Service) -> None:
    client = openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused")
    bodies = [
        {
            "model": DEMO_MODEL_ID,
            "messages": [{"role": "user", "content": q}],
            "max_tokens": 12,
            "temperature": 0,
        }
        for q in QUESTIONS
    ]
    content = "".join(
        json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": body}) + "\n"
        for i, body in enumerate(bodies)
    )  # fmt: skip
    upload = client.files.create(file=("in.jsonl", io.BytesIO(content.encode())), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = finished(client, batch.id, timeout=300)
    assert done.status == "completed" and done.request_counts.completed == len(QUESTIONS)
    answers = {
        row["custom_id"]: row["response"]["body"]["choices"][0]["message"]["content"]
        for row in jsonl(client, done.output_file_id)
    }
    for i, body in enumerate(bodies):
        live = client.chat.completions.create(**body)
        assert answers[f"q{i}"] == live.choices[0].message.content
        assert answers[f"q{i}"].strip()
