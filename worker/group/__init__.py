"""Worker groups: one model split over several processes (ranks), started by MLX's launcher.

``mlx.launch --backend ring -n 2 ... mlxq worker`` starts one ``mlxq worker`` per rank. Rank 0
is the fleet's worker (it takes jobs from Redis, heartbeats, answers); every other rank follows
it: each loads only its shard of the model (worker/group/split.py) and runs the same engine
steps, with rank 0's decisions (which jobs start, which end) shared before each step
(worker/group/engine.py). The ranks watch each other through Redis (worker/group/watch.py): a
rank that dies or stops ends the whole group within seconds, and the fleet retries its jobs as
it does for any lost worker.
"""
