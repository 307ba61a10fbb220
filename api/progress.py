"""One progress display for long commands, the importer and the benchmarks."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """Work done (of total) on stderr: tqdm's live bar on a terminal; when piped, nothing, or with
    `lines_when_piped` one plain line per update (a log keeps no bar; callers update per chunk)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "events", *,
                 lines_when_piped: bool = False, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.live = self.stream.isatty()
        self.lines = lines_when_piped and not self.live
        self._bar = tqdm(total=total, desc=f"  {label}", unit=f" {unit}", file=self.stream,
                         mininterval=0.25, dynamic_ncols=True) if self.live else None
        self._started = time.monotonic()

    def update(self, done: int, total: int | None = None) -> None:
        """`done` so far (not an increment); `total` when it became known or grew."""
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._show_bar(done)
        elif self.lines:
            self._print_line(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _show_bar(self, done: int) -> None:
        if self.total is not None and self._bar.total != self.total:
            self._bar.total = self.total
        self._bar.update(done - self._bar.n)
        if self.total is not None and done >= self.total:
            self.close()

    def _print_line(self, done: int) -> None:
        rate = done / max(time.monotonic() - self._started, 1e-9)
        if self.total:
            eta = (self.total - done) / rate if rate else 0.0
            line = (f"{done:,}/{self.total:,} {self.unit} ({100 * done / self.total:.0f}%)"
                    f"  {rate:,.0f} {self.unit}/s  ETA {eta:.0f}s")
        else:
            line = f"{done:,} {self.unit}  {rate:,.0f} {self.unit}/s"
        print(line, file=self.stream, flush=True)
