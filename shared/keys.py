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


BATCH_LANE_INFIX = ":batch:"


def batch_lane_name(queue: str, batch_id: str) -> str:
    """A batch's own lane beside the model's queue: its lines wait here. Workers serve the
    lanes last, in turn (one batch does not wait behind another), and only into the slots
    that interactive requests leave (worker/lanes.py)."""
    return f"{batch_lanes_prefix(queue)}{batch_id}"


def batch_lanes_prefix(queue: str) -> str:
    """What the names of every batch lane of a model's queue start with."""
    return f"{queue}{BATCH_LANE_INFIX}"


def is_batch_lane(queue: str) -> bool:
    return BATCH_LANE_INFIX in queue


def lane_of(queue: str) -> str:
    """Which of a model's queues this is, for people: "shared" (its shared queue), "worker
    <name>" (one worker's own queue) or "batch <id>" (one batch's lane)."""
    if is_batch_lane(queue):
        return f"batch {queue.split(BATCH_LANE_INFIX, 1)[1]}"
    if WORKER_QUEUE_INFIX in queue:
        return f"worker {queue.split(WORKER_QUEUE_INFIX, 1)[1]}"
    return "shared"


def model_queue_of(queue: str) -> str:
    """The model's shared queue, for any of its queues (a worker's own, a batch's lane)."""
    return shared_queue_of(queue).split(BATCH_LANE_INFIX, 1)[0]
