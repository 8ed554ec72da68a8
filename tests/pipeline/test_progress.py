"""Progress off a terminal: plain timestamped lines, a heartbeat while a step is silent, ETAs that
count from when the count began."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from audit.cli.progress import LineProgress, progress_for


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_a_silent_step_still_prints_a_line_at_a_steady_pace():
    console, buf = _console()
    lines = LineProgress(console, every_s=5.0, heartbeat_s=0.2)
    try:
        lines.add_task("aligning the base", total=None)
        time.sleep(0.9)  # the step reports nothing meanwhile
    finally:
        lines.close()
    printed = [ln for ln in buf.getvalue().splitlines() if "aligning the base" in ln]
    assert len(printed) >= 3, printed  # the first line, then heartbeats
    assert all(re.match(r"\d\d:\d\d:\d\d  aligning the base", ln) for ln in printed)


def test_a_finished_task_falls_silent_and_the_eta_ignores_the_time_before_counting():
    console, buf = _console()
    lines = LineProgress(console, every_s=0.0, heartbeat_s=0.1)
    try:
        task = lines.add_task("preparing", total=None)
        time.sleep(0.3)  # preparation: not part of the per-item rate
        lines.update(task, description="training", total=10, completed=0)
        lines.update(task, completed=5)
        eta = float(re.search(r"~(\d+) s left", buf.getvalue().splitlines()[-1]).group(1))
        assert eta < 1, buf.getvalue()  # 5 items in ~0 s: not 0.3 s / 5 per item
        lines.update(task, completed=10)
        n = len(buf.getvalue().splitlines())
        time.sleep(0.4)
        assert len(buf.getvalue().splitlines()) == n  # done: no heartbeat
    finally:
        lines.close()


def test_progress_for_gives_plain_lines_off_a_terminal():
    console, buf = _console()
    with progress_for(console) as progress:
        assert isinstance(progress, LineProgress)
        progress.add_task("listing the registry", total=None)
    assert progress._stop.is_set()  # the heartbeat is stopped on exit
    assert "listing the registry" in buf.getvalue()


def test_the_ray_pool_says_which_call_runs_long():
    """While its actors work on a long call (a base's SAEs are trained on its first one), the
    driver tells the sink which analyzers on which targets have been running, and for how long."""
    from audit.analyzers.base import Job, Target
    from audit.pipeline.raypool import _heartbeat
    from audit.progress import reporting_to
    from audit.records import AdapterRef

    said = []

    class Sink:
        def plan(self, n_listed, n_new): ...

        def outcome(self, outcome): ...

        def batch(self, description, done, total):
            said.append((description, done, total))

    ref = AdapterRef(registry="local:/r", repo_id="org/slow", revision="abc", files=())
    job = Job((Target(ref=ref),), ("activations",))
    now = time.monotonic()
    with reporting_to(Sink()):
        _heartbeat({"call-1": (job, None)}, {"call-1": now - 42.0}, 3, 7)
    _heartbeat({"call-1": (job, None)}, {"call-1": now}, 3, 7)  # no sink: nothing to tell, no error
    assert len(said) == 1
    description, done, total = said[0]
    assert description.startswith("activations on org/slow@abc: running 4") and (done, total) == (3, 7)
