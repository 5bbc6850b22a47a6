"""Stop strings end the text before them, even when split across pieces."""

from worker.stops import StopMatcher


def feed_all(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        released, stopped = matcher.feed(piece)
        out.append(released)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_no_stops_passes_text_through() -> None:
    assert feed_all([], ["a", "b"]) == ("ab", False)


def test_stop_inside_a_piece_cuts_before_it() -> None:
    assert feed_all(["END"], ["one two END three"]) == ("one two ", True)


def test_stop_split_across_pieces_is_found_and_not_released() -> None:
    matcher = StopMatcher(["\n\nUser:"])
    assert matcher.feed("Hello.\n") == ("Hello.", False)  # "\n" may start the stop: held
    assert matcher.feed("\nUs") == ("", False)
    assert matcher.feed("er: next") == ("", True)


def test_held_text_is_released_when_it_turns_out_not_to_stop() -> None:
    assert feed_all(["STOP"], ["ST", "ART"]) == ("START", False)
    assert feed_all(["STOP"], ["abc ST"]) == ("abc ST", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(["b", "a"], ["xxabc"]) == ("xx", True)
