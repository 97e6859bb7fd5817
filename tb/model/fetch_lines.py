"""Reference model of the core's fetched-qword lines (rtl/core/fetch_lines.py's contract).

A fill writes the line that already holds its address, else the next line in round-robin order;
a flush invalidates every line and drops a fill of the same cycle.
"""

from __future__ import annotations


class FetchLinesModel:
    def __init__(self, lines: int):
        self.lines = [None] * lines         # (qword address, word) or None
        self.next = 0

    def lookup(self, addr: int):
        """The word of `addr`, None on a miss."""
        for line in self.lines:
            if line is not None and line[0] == addr:
                return line[1]
        return None

    def step(self, *, fill=None, flush=False):
        """One clock edge: `fill` = (addr, word) or None."""
        if flush:
            self.lines = [None] * len(self.lines)
            return
        if fill is None:
            return
        for i, line in enumerate(self.lines):
            if line is not None and line[0] == fill[0]:
                self.lines[i] = fill
                return
        self.lines[self.next] = fill
        self.next = (self.next + 1) % len(self.lines)
