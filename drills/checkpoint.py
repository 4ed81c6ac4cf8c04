"""A replay's checkpoint file: which job, its ranges, and the next offset to send per partition.

Written (atomically: a temporary file renamed over the old one) after every batch the target
acknowledged, so an interrupted replay resumes where its acknowledged output ends. A graceful
stop (SIGINT/SIGTERM) flushes and writes it first, so nothing is sent twice; after a kill -9 the
records sent after the last write are sent again on resume (at least once: every consumer of
these topics is idempotent). A finished replay marks the file done; running the same job again
then starts over.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from drills.errors import BadInput
from drills.ranges import PartitionRange


def job_key(request: Mapping[str, Any]) -> str:
    """Identity of a replay job: the request as given (topic, partitions, bounds, target)."""
    return hashlib.sha256(orjson.dumps(dict(request), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass
class Checkpoint:
    job: str
    ranges: list[PartitionRange]
    next: dict[int, int] = field(default_factory=dict)
    done: bool = False

    @classmethod
    def start(cls, job: str, ranges: Sequence[PartitionRange]) -> Checkpoint:
        return cls(job, list(ranges), {r.partition: r.start for r in ranges})

    def advance(self, partition: int, next_offset: int) -> None:
        if next_offset > self.next.get(partition, -1):
            self.next[partition] = next_offset

    def remaining(self) -> list[PartitionRange]:
        """What is left: each range from its next offset (empty ranges dropped)."""
        out = [PartitionRange(r.partition, max(r.start, self.next.get(r.partition, r.start)), r.end) for r in self.ranges]
        return [r for r in out if r.count]

    @property
    def sent(self) -> int:
        return sum(max(0, min(self.next.get(r.partition, r.start), r.end) - r.start) for r in self.ranges)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "ranges": [[r.partition, r.start, r.end] for r in self.ranges],
            "next": {str(p): o for p, o in self.next.items()},
            "done": self.done,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            str(data["job"]),
            [PartitionRange(int(p), int(s), int(e)) for p, s, e in data["ranges"]],
            {int(p): int(o) for p, o in dict(data["next"]).items()},
            bool(data.get("done")),
        )


def load(path: Path, job: str) -> Checkpoint | None:
    """The unfinished checkpoint of ``job`` at ``path``, or None (no file, or a finished job).
    A file of another job is refused: resuming it would replay the wrong range."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BadInput(f"checkpoint {path} is unreadable: {exc}") from exc
    try:
        cp = Checkpoint.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"checkpoint {path} is not a replay checkpoint: {exc}") from exc
    if cp.job != job:
        raise BadInput(f"checkpoint {path} belongs to another replay job; remove it or pass another --checkpoint")
    return None if cp.done else cp


def save(path: Path, cp: Checkpoint) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(cp.to_dict(), option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
