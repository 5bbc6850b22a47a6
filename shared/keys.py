"""The name of each model's RQ queue, which the API and the workers must agree on."""

import hashlib
import re

QUEUE_PREFIX = "mlxq"


def queue_name_for_model(model_id: str) -> str:
    """One RQ queue per model, so a worker only takes jobs for the model it loaded.

    Readable when the id is, unique always (a short hash of the exact id is appended).
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id.rsplit("/", 1)[-1]).strip("-").lower()
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{QUEUE_PREFIX}-{slug[:40]}-{digest}"


WORKER_QUEUE_INFIX = ":w:"


def worker_queue_name(queue: str, worker_name: str) -> str:
    """A worker's own queue beside a model's shared one: requests routed to it (they reuse
    its prefix cache) wait here, and it serves this queue first."""
    return f"{queue}{WORKER_QUEUE_INFIX}{worker_name}"


def shared_queue_of(queue: str) -> str:
    """The model's shared queue, for a worker's own queue (or the shared queue itself)."""
    return queue.split(WORKER_QUEUE_INFIX, 1)[0]


BATCH_LANE_SUFFIX = ":batch"


def batch_lane_name(queue: str) -> str:
    """The model's low-priority lane: lines of OpenAI batches wait here. Workers serve it
    last, and only into the slots that interactive requests leave (worker/lanes.py)."""
    return f"{queue}{BATCH_LANE_SUFFIX}"


def is_batch_lane(queue: str) -> bool:
    return queue.endswith(BATCH_LANE_SUFFIX)


def lane_of(queue: str) -> str:
    """Which of a model's three queues this is, for people: "shared" (its shared queue),
    "worker <name>" (one worker's own queue) or "batch" (its batch lane, the lines of every
    batch on the model)."""
    if is_batch_lane(queue):
        return "batch"
    if WORKER_QUEUE_INFIX in queue:
        return f"worker {queue.split(WORKER_QUEUE_INFIX, 1)[1]}"
    return "shared"


def model_queue_of(queue: str) -> str:
    """The model's shared queue, for any of its three queues."""
    return shared_queue_of(queue).removesuffix(BATCH_LANE_SUFFIX)
