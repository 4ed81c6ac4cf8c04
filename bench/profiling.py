"""``--profile DIR``: where the time goes, per phase and process, sampled with py-spy.

For each profiled phase, one ``py-spy record --format raw`` per Python process of the pipeline
(change agent, region indexers, region Milvus servers; the bench process itself for the peer)
writes collapsed stacks to ``DIR/<phase>.<process>.txt`` (open them with any flame-graph tool);
the summary kept in the JSON is each process' busy share and its top functions by inclusive and
by self samples. py-spy samples from outside, without stopping the process (``--nonblocking``), so
the measured figures move very little; still, compare runs with and without it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RATE = 20  # samples per second (low: the profiled run is also the measured one)


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, out_dir: Path, rate: int = RATE) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.binary = py_spy()
        self.summaries: dict[str, dict[str, Any]] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.binary is None:
            log.warning("py-spy not found (pip install -e '.[bench]'): --profile records nothing")

    @contextmanager
    def phase(self, name: str, pids: Mapping[str, int]) -> Iterator[None]:
        if self.binary is None:
            yield
            return
        running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for proc, pid in pids.items():
            out = self.out_dir / f"{name}.{proc}.txt"
            argv = [self.binary, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                    "--nolineno", "--nonblocking", "--output", str(out)]
            running[proc] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            for child, _ in running.values():
                child.send_signal(signal.SIGINT)
            phase: dict[str, Any] = {"seconds": round(seconds, 2)}
            for proc, (child, out) in running.items():
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                phase[proc] = summarize(out, seconds, self.rate)
            self.summaries[name] = phase


def summarize(path: Path, seconds: float, rate: int, top: int = 8) -> dict[str, Any]:
    """Busy share and top functions of one raw py-spy file (lines ``frame;frame;... count``)."""
    if not path.exists() or os.path.getsize(path) == 0:
        return {"samples": 0}
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(100 * n / total, 1)] for frame, n in counter.most_common(top)]

    return {
        "samples": total,
        # Samples of non-idle threads per wall-clock sample slot: 1.0 = one thread busy all along.
        "busy_threads": round(total / max(1.0, seconds * rate), 2),
        "top_self_pct": share(self_time),
        "top_inclusive_pct": share(inclusive),
    }
