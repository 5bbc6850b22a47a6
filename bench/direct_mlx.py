"""Direct mlx-lm, no server: the single-stream baseline, in its own process.

``python -m bench.direct_mlx MODEL`` loads the model once, prints ``{"ready": true}``, then
answers one JSON line per request on stdin ({"question", "max_tokens"}) with
{"text", "completion_tokens", "prompt_tokens", "seconds", ...}. The time covers what mlxq's
worker does for a request: chat template, tokenization, prefill, greedy decoding,
detokenization. "first_token_s" is the time from calling stream_generate to its first token
(prefill and one sampled token), "prepare_s" the chat template and tokenization before it.
It runs in a separate process so it gets the same BLAS (LD_PRELOAD) and a clean interpreter.
"""

import json
import sys
import time


def main(model_path: str) -> None:
    from mlx_lm import load, stream_generate

    model, tokenizer = load(model_path)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        # The same prompt as mlxq's worker builds (worker/prompt.py).
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": request["question"]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        prompt = tokenizer.encode(text, add_special_tokens=False)
        generating = time.perf_counter()
        first_token = None
        pieces: list[str] = []
        last = None
        for last in stream_generate(model, tokenizer, prompt, max_tokens=request["max_tokens"]):
            if first_token is None:
                first_token = time.perf_counter()
            pieces.append(last.text)
        seconds = time.perf_counter() - started
        answer = {
            "text": "".join(pieces),
            "completion_tokens": last.generation_tokens if last else 0,
            "prompt_tokens": len(prompt),
            "finish_reason": last.finish_reason if last else None,
            "seconds": seconds,
            "prepare_s": generating - started,
            "first_token_s": (first_token or generating) - generating,
            "first_text": pieces[0] if pieces else "",
        }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
