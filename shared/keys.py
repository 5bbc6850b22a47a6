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
