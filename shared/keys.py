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


def model_queue_of(queue: str) -> str:
    """The model's shared queue of any queue beside it: a worker's own queue, a key's queue,
    a batch's lane (or the shared queue itself)."""
    for infix in (WORKER_QUEUE_INFIX, KEY_QUEUE_INFIX, BATCH_LANE_INFIX):
        queue = queue.split(infix, 1)[0]
    return queue


KEY_QUEUE_INFIX = ":k:"


def key_queue_name(queue: str, key_name: str) -> str:
    """One API key's queue beside a model's shared one: its requests wait here, and workers
    serve the keys' queues (and the shared one, for requests without a key) in turn, so one
    key's flood does not starve another key's request (worker/fair_share.py)."""
    return f"{queue}{KEY_QUEUE_INFIX}{key_name}"


def key_queues_prefix(queue: str) -> str:
    """What the names of every key's queue of a model's queue start with."""
    return f"{queue}{KEY_QUEUE_INFIX}"


BATCH_LANE_INFIX = ":batch:"


def batch_lane_name(queue: str, batch_id: str, owner: str | None = None) -> str:
    """A batch's own lane beside the model's queue: its lines wait here. Workers serve the
    lanes last, in turn (one owner's batches, then one batch, do not wait behind another's),
    and only into the slots that interactive requests leave (worker/lanes.py). The lane
    names the key that owns the batch (``<queue>:batch:<owner>:<batch id>``), so that
    workers can share the lanes between owners first."""
    return f"{batch_lanes_prefix(queue)}{owner + ':' if owner else ''}{batch_id}"


def lane_owner(lane: str) -> str:
    """The key that owns a batch lane ("" for a batch made without a key)."""
    rest = lane.split(BATCH_LANE_INFIX, 1)[-1]
    return rest.rsplit(":", 1)[0] if ":" in rest else ""


def queue_owner(queue: str) -> str | None:
    """The key whose requests a queue holds: a key's queue or a batch lane of its own; None
    for the shared queues (a model's, a worker's own)."""
    if BATCH_LANE_INFIX in queue:
        return lane_owner(queue) or None
    if KEY_QUEUE_INFIX in queue:
        return queue.split(KEY_QUEUE_INFIX, 1)[1]
    return None


def batch_lanes_prefix(queue: str) -> str:
    """What the names of every batch lane of a model's queue start with."""
    return f"{queue}{BATCH_LANE_INFIX}"


def is_batch_lane(queue: str) -> bool:
    return BATCH_LANE_INFIX in queue


def lane_of(queue: str) -> str:
    """Which of a model's queues this is, for people: "shared" (its shared queue), "worker
    <name>" (one worker's own queue), "key <name>" (one API key's queue) or "batch <id>"
    (one batch's lane, its owner first where it has one)."""
    if is_batch_lane(queue):
        return f"batch {queue.split(BATCH_LANE_INFIX, 1)[1]}"
    if WORKER_QUEUE_INFIX in queue:
        return f"worker {queue.split(WORKER_QUEUE_INFIX, 1)[1]}"
    if KEY_QUEUE_INFIX in queue:
        return f"key {queue.split(KEY_QUEUE_INFIX, 1)[1]}"
    return "shared"
