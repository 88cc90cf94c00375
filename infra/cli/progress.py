"""Progress bars on stderr for long operations, drawn by tqdm; none unless stderr is a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """`Progress("replay", total)`, then `update_to(done, total)` with counts from the start
    (what our progress callbacks report); a total of 0 is unknown until a callback names it.
    Closing leaves the last state of the bar on screen: count, elapsed time, rate."""

    def __init__(self, label: str, total: int, *, force: bool = False) -> None:
        self.bar = tqdm(
            desc=label,
            total=total or None,
            file=sys.stderr,
            disable=False if force else None,  # None: only when stderr is a terminal
            mininterval=0.1,
            dynamic_ncols=True,
        )

    def update_to(self, done: int, total: int | None = None) -> None:
        if total is not None and total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
