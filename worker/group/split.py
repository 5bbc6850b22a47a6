"""Splitting a model over a group's ranks: tensor parallel (each rank holds a slice of every
layer; mlx-lm's ``model.shard``) where the model supports it and its heads divide evenly
among the ranks, pipeline (each rank holds a run of whole layers) otherwise.

mlx-lm gives some architectures a pipeline (``model.model.pipeline``); Llama, the demo model's,
has none, so it is added here the way mlx-lm writes it for Qwen2: rank size-1 runs the first
layers and sends its hidden state on, rank 0 runs the last ones, and the result is gathered
so every rank computes the same logits (every rank samples the same token).
"""

from typing import Any, Literal

from worker.startup_error import StartupError

Split = Literal["tensor", "pipeline"]
HEAD_COUNTS = ("num_attention_heads", "num_key_value_heads")


def choose_split(model: Any, size: int, asked: str = "auto") -> Split:
    """How ``model`` is split over ``size`` ranks. ``asked``: 'auto', 'tensor' or 'pipeline'
    (MLXQ_GROUP_SPLIT); a split the model cannot take is a StartupError saying why."""
    tensor_why = _why_not_tensor(model, size)
    pipeline_why = _why_not_pipeline(model, size)
    if asked == "tensor" and tensor_why:
        raise StartupError(f"MLXQ_GROUP_SPLIT=tensor: {tensor_why}")
    if asked == "pipeline" and pipeline_why:
        raise StartupError(f"MLXQ_GROUP_SPLIT=pipeline: {pipeline_why}")
    if asked == "tensor" or (asked == "auto" and not tensor_why):
        return "tensor"
    if pipeline_why:
        raise StartupError(
            f"this model cannot be split over {size} ranks: {tensor_why}; {pipeline_why}"
        )
    return "pipeline"


def apply_split(model: Any, group: Any, split: Split) -> None:
    """Keep only this rank's share of ``model`` (loaded lazily: the rest is never read)."""
    if split == "tensor":
        model.shard(group)
        return
    if not hasattr(model.model, "pipeline"):
        _add_llama_pipeline(model)
    model.model.pipeline(group)


def _why_not_tensor(model: Any, size: int) -> str | None:
    if not hasattr(model, "shard"):
        return f"mlx-lm has no tensor-parallel split for {_kind(model)} models"
    args = getattr(model, "args", None)
    for name in HEAD_COUNTS:
        count = getattr(args, name, None)
        if isinstance(count, int) and count % size:
            heads = name.removeprefix("num_").replace("_", " ")
            return f"its {count} {heads} do not divide among {size} ranks"
    return None


def _why_not_pipeline(model: Any, size: int) -> str | None:
    layers = len(getattr(model, "layers", []))
    if layers < size:
        return f"its {layers} layers are fewer than the group's {size} ranks"
    inner = getattr(model, "model", None)
    if (inner is not None and hasattr(inner, "pipeline")) or _is_plain_llama(model):
        return None
    return f"neither mlx-lm nor mlxq has a pipeline split for {_kind(model)} models"


def _kind(model: Any) -> str:
    return str(getattr(model, "model_type", type(model).__module__.rsplit(".", 1)[-1]))


def _is_plain_llama(model: Any) -> bool:
    from mlx_lm.models import llama

    return (
        type(model) is llama.Model
        and type(model.model) is llama.LlamaModel
        and not any(layer.use_sliding for layer in model.model.layers)
    )


def _add_llama_pipeline(model: Any) -> None:
    """Give a Llama model mlx-lm's pipeline methods (the classes are swapped in place: the
    weights stay where they are)."""
    model.model.__class__ = PipelinedLlamaModel
    model.model.pipeline_rank, model.model.pipeline_size = 0, 1
    model.model.start_idx, model.model.end_idx = 0, None
    model.__class__ = PipelinedLlama


def _pipelined_classes() -> tuple[type, type]:
    import mlx.core as mx
    from mlx_lm.models import llama
    from mlx_lm.models.base import create_attention_mask
    from mlx_lm.models.pipeline import PipelineMixin

    class PipelinedLlamaModel(PipelineMixin, llama.LlamaModel):
        def __call__(self, inputs: Any, cache: Any = None, input_embeddings: Any = None) -> Any:
            h = input_embeddings if input_embeddings is not None else self.embed_tokens(inputs)
            rank, size = self.pipeline_rank, self.pipeline_size
            if cache is None:
                cache = [None] * len(self.pipeline_layers)
            mask = create_attention_mask(h, cache[0])
            if rank < size - 1:  # the ranks after this one ran the layers before its own
                h = mx.distributed.recv_like(h, rank + 1)
            for layer, layer_cache in zip(self.pipeline_layers, cache, strict=True):
                h = layer(h, mask, cache=layer_cache)
            if rank != 0:
                h = mx.distributed.send(h, (rank - 1) % size)
                if cache[-1] is not None:  # evaluating the cache sends the hidden state
                    cache[-1].keys = mx.depends(cache[-1].keys, h)
            if size > 1:  # every rank gets the last rank's result
                h = mx.distributed.all_gather(h)[: h.shape[0]]
            return self.norm(h)

    class PipelinedLlama(llama.Model):
        @property
        def layers(self) -> Any:  # this rank's layers: one KV cache each
            return self.model.pipeline_layers

    return PipelinedLlamaModel, PipelinedLlama


PipelinedLlamaModel, PipelinedLlama = _pipelined_classes()
