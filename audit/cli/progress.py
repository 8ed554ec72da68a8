"""Progress of long CLI steps: rich bars in a terminal, plain timestamped lines elsewhere (a log,
CI, a Prefect worker), where a rich bar draws nothing until it ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

LINE_EVERY_S = 5.0
"""Off a terminal: at most one line per task this often (and one when a task completes)."""

HEARTBEAT_S = 10.0
"""Off a terminal: a task that is still running but has not moved prints its line again this often
(a step such as aligning the base reports nothing for minutes otherwise)."""


class LineProgress:
    """The part of ``rich.progress.Progress`` the CLI uses, printing plain lines
    (``HH:MM:SS  description  k/n  elapsed  ~eta``) at a steady pace."""

    def __init__(self, console: Console, every_s: float = LINE_EVERY_S, heartbeat_s: float | None = HEARTBEAT_S) -> None:
        self.console, self.every_s = console, every_s
        self._tasks: dict[int, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        if heartbeat_s:
            self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), daemon=True,
                                          name="progress-heartbeat")
            self._beat.start()

    def close(self) -> None:
        """Stop the heartbeat."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=1)

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every / 2):
            with self._lock:
                now = time.monotonic()
                for tid, t in self._tasks.items():
                    finished = t["total"] is not None and t["completed"] >= t["total"]
                    if not finished and now - t["printed"] >= every:
                        self._print(tid, force=True)

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        with self._lock:
            tid = len(self._tasks)
            now = time.monotonic()
            self._tasks[tid] = {"description": description, "total": total, "completed": 0, "t0": now,
                                "printed": 0.0, "since": now, "base": 0}
            self._print(tid, force=True)
            return tid

    def update(self, task: int, *, description: str | None = None, total: float | None = None,
               completed: float | None = None, advance: float | None = None, **_: Any) -> None:
        with self._lock:
            t = self._tasks[task]
            changed = description is not None and description != t["description"]
            if description is not None:
                t["description"] = description
            if total is not None and total != t["total"]:
                # the ETA counts from when the count began, not from the preparation before it
                t["total"], t["since"] = total, time.monotonic()
                t["base"] = completed if completed is not None else t["completed"]
            if completed is not None:
                t["completed"] = completed
            if advance is not None:
                t["completed"] += advance
            done = t["total"] is not None and t["completed"] >= t["total"]
            self._print(task, force=changed or done)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def _print(self, task: int, force: bool = False) -> None:
        t, now = self._tasks[task], time.monotonic()
        if not force and now - t["printed"] < self.every_s:
            return
        t["printed"] = now
        elapsed = now - t["t0"]
        count = f"  {t['completed']:g}/{t['total']:g}" if t["total"] else ""
        eta = ""
        counted = t["completed"] - t["base"]
        if t["total"] and counted > 0 and t["completed"] < t["total"]:
            eta = f"  ~{(now - t['since']) / counted * (t['total'] - t['completed']):.0f} s left"
        self.console.print(f"{time.strftime('%H:%M:%S')}  {t['description']}{count}  {elapsed:.0f} s{eta}",
                           highlight=False, soft_wrap=True)


@contextmanager
def progress_for(console: Console, *, eta: bool = True) -> Iterator[Progress | LineProgress]:
    """Bars in a terminal, :class:`LineProgress` otherwise."""
    if not console.is_terminal:
        lines = LineProgress(console)
        try:
            yield lines
        finally:
            lines.close()
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, *([TimeRemainingColumn()] if eta else []), console=console) as progress:
        yield progress


class Bar:
    """Progress sink (see :mod:`audit.progress`) of a scan: the spectra, then the analyzers that
    need the base model (one step per unit) and, when they run in this process, their prompt batches."""

    def __init__(self, progress: Progress | LineProgress) -> None:
        self.progress = progress
        self.task = progress.add_task("listing the registry", total=None)
        self.probe_task: Any = None
        self.batch_task: Any = None

    def plan(self, n_listed: int, n_new: int) -> None:
        self.progress.update(self.task, description=f"auditing {n_new} new of {n_listed}", total=n_new)

    def outcome(self, outcome: Any) -> None:
        from audit.pipeline.commit import Written
        from audit.records import Deferred

        self.progress.advance(self.task)
        if isinstance(outcome, Written) and outcome.status == "failed":
            self.progress.console.print(f"[yellow]finding[/yellow] {outcome.repo_id}: {', '.join(outcome.error_codes)}")
        elif isinstance(outcome, Deferred):
            self.progress.console.print(f"[red]deferred[/red] {outcome.ref.repo_id}: {outcome.error}")

    def probe_plan(self, plan: Any) -> None:
        n_units = sum(len(j.targets) * len(j.analyzers) for j in plan.base_jobs + plan.adapter_jobs)
        self.probe_task = self.progress.add_task(
            f"probing {plan.n_adapters} adapters ({len(plan.base_jobs)} base models; "
            f"{len(plan.skipped)} units without a base)", total=n_units or None)

    def probe_outcome(self, outcome: Any) -> None:
        from audit.pipeline.commit import Written
        from audit.records import Deferred

        if self.probe_task is not None:
            self.progress.advance(self.probe_task)
        if isinstance(outcome, Written) and outcome.status == "failed":
            self.progress.console.print(f"[yellow]finding[/yellow] {outcome.repo_id} ({outcome.analyzer}): "
                                        f"{', '.join(outcome.error_codes)}")
        elif isinstance(outcome, Deferred):
            self.progress.console.print(f"[red]deferred[/red] {outcome.ref.repo_id}: {outcome.error}")

    def batch(self, description: str, done: int, total: int) -> None:
        if self.batch_task is None:
            self.batch_task = self.progress.add_task(description, total=total)
        self.progress.update(self.batch_task, description=description, completed=done, total=total)
