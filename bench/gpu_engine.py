"""mlxq's batching engine on a GPU (MLX's CUDA build): is a lone request as fast as plain
single-stream generation, and what does batching buy?

Runs on a machine with an NVIDIA GPU, without Redis: it drives worker/mlx_engine.MLXEngine
directly, next to mlx-lm's own generate_step and BatchGenerator, on a random-weight llama of
about 0.8B parameters in bf16 (no model download needed). Usage:

    python bench/gpu_engine.py --tokenizer <folder with tokenizer.json> --out result.json
"""

import argparse
import json
import queue
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_map  # noqa: E402
from mlx_lm.generate import BatchGenerator, generate_step  # noqa: E402
from mlx_lm.models import llama  # noqa: E402
from mlx_lm.tokenizer_utils import load as load_tokenizer  # noqa: E402

from shared.schemas import GenerationRequest  # noqa: E402
from shared.settings import Settings  # noqa: E402
from worker.engine_api import Failed, Finished  # noqa: E402
from worker.mlx_engine import MLXEngine  # noqa: E402
from worker.model import LoadedModel  # noqa: E402

NEW_TOKENS = 256
ARGS = llama.ModelArgs(
    model_type="llama",
    hidden_size=2048,
    num_hidden_layers=16,
    intermediate_size=5632,
    num_attention_heads=16,
    num_key_value_heads=4,
    rms_norm_eps=1e-5,
    vocab_size=49152,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


TINY = llama.ModelArgs(
    model_type="llama",
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=49152,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
"""--tiny: a smoke test of this script on a CPU."""


def random_model(args: llama.ModelArgs):
    model = llama.Model(args)
    model.update(tree_map(lambda p: p.astype(mx.bfloat16), model.parameters()))
    mx.eval(model.parameters())
    return model


def prompts(n: int) -> list[list[int]]:
    return [[(7 * i + j) % 40000 + 100 for j in range(32)] for i in range(n)]


def plain_single(model) -> float:
    start, n = time.perf_counter(), 0
    for _ in generate_step(mx.array(prompts(1)[0]), model, max_tokens=NEW_TOKENS):
        n += 1
    return n / (time.perf_counter() - start)


def plain_batch(model, batch: int) -> float:
    generator = BatchGenerator(
        model, stop_tokens=[], completion_batch_size=batch, prefill_batch_size=min(batch, 8)
    )
    generator.insert(prompts(batch), max_tokens=[NEW_TOKENS] * batch)
    start, n = time.perf_counter(), 0
    while n < NEW_TOKENS * batch:
        _, responses = generator.next()
        n += len(responses)
    return n / (time.perf_counter() - start)


def engine_run(engine: MLXEngine, outputs: queue.Queue, batch: int) -> tuple[float, int]:
    requests = []
    for i, tokens in enumerate(prompts(batch)):
        request = GenerationRequest(
            request_id=str(i),
            model="random",
            prompt="x",
            max_tokens=NEW_TOKENS,
            deadline=time.time() + 600,
        )
        prepared = engine.prepare(f"job{i}", request, 600)
        requests.append(
            type(prepared)(prepared.job_id, request, tokens, NEW_TOKENS, prepared.timeout_at)
        )
    start = time.perf_counter()
    for prepared in requests:
        engine.submit(prepared)
    done, generated = 0, 0
    while done < batch:
        output = outputs.get()
        if isinstance(output, Finished | Failed):
            done += 1
            generated += output.completion_tokens if isinstance(output, Finished) else 0
    return generated / (time.perf_counter() - start), generated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiny", action="store_true", help="a tiny model: check the script")
    args = parser.parse_args()
    model = random_model(TINY if args.tiny else ARGS)
    tokenizer = load_tokenizer(Path(args.tokenizer))
    outputs: queue.Queue = queue.Queue()
    loaded = LoadedModel("random", Path("."), model, tokenizer, None)
    settings = Settings(worker_concurrency=64, max_tokens_cap=4096)
    engine = MLXEngine(settings, outputs.put, loaded=loaded)
    engine.start()
    results: dict = {"device": str(mx.default_device()), "new_tokens": NEW_TOKENS}
    plain_single(model), plain_batch(model, 8), engine_run(engine, outputs, 1)  # warm up
    for round_ in range(3):
        row = results.setdefault("rounds", [])
        entry = {"generate_step": plain_single(model), "batchgen_1": plain_batch(model, 1)}
        entry["mlxq_1"], entry["mlxq_1_tokens"] = engine_run(engine, outputs, 1)
        for batch in (8, 32, 64):
            entry[f"batchgen_{batch}"] = plain_batch(model, batch)
            entry[f"mlxq_{batch}"], entry[f"mlxq_{batch}_tokens"] = engine_run(
                engine, outputs, batch
            )
        row.append(entry)
        print(round_, json.dumps(entry), flush=True)
    engine.stop()
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
