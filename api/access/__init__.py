"""Who is calling, and what they may do: many people on one fleet (issue 23).

- ``identity.py``: the key a request carries, resolved once at the edge (api/edge/api_key.py)
  into an ``Identity`` that routes and jobs carry (``GenerationRequest.owner``);
- ``limits.py``: each key's requests and tokens per minute and concurrent requests, enforced
  atomically in Redis across every API process (one Lua script);
- ``accounting.py``: each answer's usage, per key and day (Redis) and in ``/metrics``;
- ``routes.py``: ``GET /usage``, the key's own usage (every key's, for an admin key).

Files and batches check ``Identity.may_see`` (api/batch/); workers share a busy fleet
between keys (worker/fair_share.py). The keys themselves are shared/api_keys.py's.
"""
