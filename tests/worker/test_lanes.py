"""The slot policy between interactive requests and batch lines (worker/lanes.py)."""

from worker.lanes import LaneSlots


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_worker_gives_batch_lines_their_share_and_no_more() -> None:
    lanes = LaneSlots(batch_slots=3, quiet_s=2.0, clock=Clock())
    for n in range(3):
        assert lanes.batch_has_room()
        lanes.taken(f"b{n}", from_batch_lane=True)
    assert not lanes.batch_has_room()
    lanes.freed("b0")
    assert lanes.batch_has_room()


def test_interactive_requests_hold_new_batch_lines_to_one_slot_until_quiet() -> None:
    clock = Clock()
    lanes = LaneSlots(batch_slots=4, quiet_s=2.0, clock=clock)
    lanes.taken("b0", from_batch_lane=True)
    lanes.taken("b1", from_batch_lane=True)
    lanes.taken("chat", from_batch_lane=False)
    assert not lanes.batch_has_room()  # two running already, one allowed while busy
    lanes.freed("b0")
    assert not lanes.batch_has_room()
    lanes.freed("b1")
    assert lanes.batch_has_room()  # the one slot batches keep, so they never starve
    lanes.taken("b2", from_batch_lane=True)
    lanes.freed("chat")
    clock.now += 1.0
    assert not lanes.batch_has_room()  # an interactive request ended a second ago
    clock.now += 1.5
    assert lanes.batch_has_room()  # quiet again: the full share
    assert lanes.batch_running == 1
