"""The placement rule: which worker loads a model that requests wait for (worker/placement.py).

Every worker applies the same rule to the same view of the fleet; these cases are the
choices a user sees in /fleet's placement log and in which Mac answers."""

from shared.protocol import CatalogueEntry, HeldModel
from worker.placement import SCALE_OUT_AFTER_S, WorkerView, choose

GB = 10**9


def entry(model: str, memory: int = 2 * GB, refused: str | None = None) -> CatalogueEntry:
    return CatalogueEntry(model=model, memory_bytes=memory, refused=refused)


def held(model: str, size: int = 2 * GB, running: int = 0) -> HeldModel:
    return HeldModel(model=model, bytes=size, own_bytes=size, running=running)


def worker(
    name: str,
    *held_models: HeldModel,
    budget: int = 6 * GB,
    slots: int = 4,
    catalogue: tuple[str, ...] = ("m",),
    loading: frozenset[str] = frozenset(),
    takes_jobs: bool = True,
) -> WorkerView:
    return WorkerView(
        name=name,
        takes_jobs=takes_jobs,
        slots=slots,
        running=sum(h.running for h in held_models),
        budget=budget,
        used=sum(h.bytes for h in held_models),
        held={h.model: h for h in held_models},
        loading=loading,
        catalogue={model: entry(model) for model in catalogue},
    )


def test_one_worker_loads_a_model_nobody_holds_and_it_is_an_idle_one() -> None:
    busy = worker("a", held("x", running=1))
    idle = worker("b", held("y"))
    assert choose("m", 3, [busy, idle]).worker == "b"  # type: ignore[union-attr]
    assert choose("m", 3, [idle, busy]).worker == "b"  # type: ignore[union-attr]


def test_among_idle_workers_one_with_room_beats_one_that_must_unload() -> None:
    full = worker("a", held("x", 3 * GB), held("y", 2 * GB))  # 1 GB free of 6
    roomy = worker("b", held("x", 3 * GB))  # 3 GB free
    choice = choose("m", 1, [full, roomy])
    assert choice is not None and choice.worker == "b" and "has room" in choice.reason


def test_a_model_with_running_jobs_is_never_unloaded_to_make_room() -> None:
    blocked = worker("a", held("x", 5 * GB, running=1))  # only by unloading a busy model
    assert choose("m", 1, [blocked]) is None
    evicting = worker("a", held("x", 5 * GB))  # the same model, idle: it may go
    choice = choose("m", 1, [evicting])
    assert choice is not None and "must unload 1.0 GB" in choice.reason


def test_a_worker_that_refuses_the_model_or_does_not_list_it_is_never_chosen() -> None:
    refusing = worker("a")
    refusing.catalogue["m"] = entry("m", refused="its load failed")
    other = worker("b", catalogue=("other",))
    suspended = worker("c", takes_jobs=False)
    assert choose("m", 5, [refusing, other, suspended]) is None


def test_ties_are_broken_the_same_way_by_every_worker() -> None:
    workers = [worker("b"), worker("a"), worker("c")]
    assert {choose("m", 1, order).worker for order in (workers, workers[::-1])} == {"a"}  # type: ignore[union-attr]


def test_nothing_is_loaded_without_demand_or_while_a_copy_loads() -> None:
    assert choose("m", 0, [worker("a")]) is None
    loading = worker("a", loading=frozenset({"m"}))
    assert choose("m", 50, [loading, worker("b")], crowded_for_s=60) is None


def test_a_crowded_model_gets_a_copy_on_an_idle_worker_after_a_while() -> None:
    holder = worker("a", held("m", running=4), slots=4)
    idle = worker("b", held("y"))
    busy = worker("c", held("z", running=1))
    assert choose("m", 3, [holder, idle, busy], crowded_for_s=0.5) is None  # not yet
    choice = choose("m", 3, [holder, idle, busy], crowded_for_s=SCALE_OUT_AFTER_S)
    assert choice is not None and choice.worker == "b" and "beyond the free slots" in choice.reason
    assert choose("m", 3, [holder, busy], crowded_for_s=60) is None  # no idle worker: none


def test_a_queue_its_holders_can_take_gets_no_copy() -> None:
    holder = worker("a", held("m", running=1), slots=4)  # 3 free slots
    assert choose("m", 3, [holder, worker("b")], crowded_for_s=60) is None
