"""What ``regionsync bench`` is asked to run (its options and the sizes they imply)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchOptions:
    quick: bool = False
    docs: int | None = None  # documents loaded (default: 20,000; quick: 120)
    freshness_s: float | None = None  # length of the freshness load (default 60 s; quick 8 s)
    freshness_load: float = 0.2  # fraction of row 2's docs/s
    embed_sample: int | None = None  # passages per embedding-limit measurement (default 1,000; quick 192)
    peer_fractions: tuple[float, ...] = (0.001, 0.01)  # of the documents, changed for row 5 (5a, 5b)
    dialog_sessions: int | None = None  # default 10,000; quick 1,000
    profile_dir: Path | None = None
    state_dir: Path | None = None
    keep_state: bool = False
    seed: int = 7

    @property
    def n_docs(self) -> int:
        return self.docs or (120 if self.quick else 20_000)

    @property
    def n_sessions(self) -> int:
        return self.dialog_sessions or (1_000 if self.quick else 10_000)

    @property
    def freshness_seconds(self) -> float:
        return self.freshness_s or (8.0 if self.quick else 60.0)

    @property
    def n_embed_sample(self) -> int:
        return self.embed_sample or (192 if self.quick else 1_000)


def apply_timeout(passages: int) -> float:
    # Generous: a machine loaded by others may embed at a third of its quiet speed.
    return 180.0 + passages / 10.0
