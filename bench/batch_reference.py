"""mlx-lm's own ``batch_generate``: the baseline of the batch throughput section (j).

``python -m bench.batch_reference MODEL`` loads the model once, prints ``{"ready": true}``,
then answers one JSON line per request on stdin ({"questions", "max_tokens", "batch_size"})
with {"seconds", "completion_tokens", "texts"}: every question as a chat prompt (the same
template mlxq's worker applies), generated greedily by one ``batch_generate`` call with
``batch_size`` sequences decoding at once. The time covers templating, tokenization and
generation, as mlxq's does.
"""

import json
import sys
import time


def main(model_path: str) -> None:
    from mlx_lm import batch_generate, load

    model, tokenizer = load(model_path)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        prompts = [
            tokenizer.encode(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": question}],
                    tokenize=False,
                    add_generation_prompt=True,
                ),
                add_special_tokens=False,
            )
            for question in request["questions"]
        ]
        result = batch_generate(
            model,
            tokenizer,
            prompts,
            max_tokens=request["max_tokens"],
            completion_batch_size=request["batch_size"],
            prefill_batch_size=request["batch_size"],
            return_token_ids=True,
        )
        seconds = time.perf_counter() - started
        answer = {
            "seconds": seconds,
            "completion_tokens": sum(len(ids) for ids in result.token_ids),
            "texts": result.texts,
        }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
