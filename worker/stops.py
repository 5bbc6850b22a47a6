"""Stop strings: end generation at the first one and keep it out of the text.

Text is released as it is generated, except a tail that could still turn out to be the start
of a stop string; that tail is held back until the next piece decides it.
"""


class StopMatcher:
    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """The text that is safe to release now, and whether a stop string was reached."""
        if not self._stops:
            return piece, False
        text = self._pending + piece
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if found:
            self._pending = ""
            return text[: min(found)], True
        held = self._longest_stop_prefix_at_end(text)
        self._pending = text[len(text) - held :]
        return text[: len(text) - held], False

    def flush(self) -> str:
        """What was held back, once generation ended without reaching a stop string."""
        rest, self._pending = self._pending, ""
        return rest

    def _longest_stop_prefix_at_end(self, text: str) -> int:
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:length]):
                    longest = length
                    break
        return longest
