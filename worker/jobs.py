"""The job functions mlxq enqueues (see shared/job_functions.py for their dotted paths).

An mlxq worker never calls these: it reads the job's request and hands it to its batching
engine. They exist so that each RQ job names a real function, and so that a stock
``rq worker`` that takes an mlxq job fails it with a message that says what to run instead.
"""


def generate(request: dict) -> dict:
    raise RuntimeError(
        "mlxq generation jobs must run on an mlxq worker ('mlxq worker'), which loads the "
        "model once and batches jobs; a stock RQ worker cannot run them."
    )


def embed(request: dict) -> dict:
    raise RuntimeError(
        "mlxq embedding jobs must run on an mlxq worker ('mlxq worker' with an embedding "
        "model), which loads the model once and batches inputs; a stock RQ worker cannot."
    )


def tokenize(request: dict) -> dict:
    raise RuntimeError(
        "mlxq tokenizer jobs must run on an mlxq worker ('mlxq worker'), which holds the "
        "model's tokenizer; a stock RQ worker cannot run them."
    )
