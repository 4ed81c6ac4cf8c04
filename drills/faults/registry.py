"""Every scenario by name, in the order the suite runs them: the ones that damage the most (a
whole region lost, two regions writing at once) near the end, the secrets scan last (it reads what
all wrote)."""

from __future__ import annotations

from drills.errors import BadInput
from drills.faults.scenario import Scenario


def _classes() -> dict[str, type[Scenario]]:
    from drills.faults import (
        kill,
        milvus_down,
        poison_storm,
        postgres_restart,
        regions,
        schema_change,
        secrets_scan,
    )

    found: list[type[Scenario]] = [
        *kill.SCENARIOS, milvus_down.MilvusDown, postgres_restart.PostgresRestart, schema_change.SchemaChange,
        regions.BrokerKill, regions.LinkCut, regions.SplitBrain, regions.RegionLoss, poison_storm.PoisonStorm,
        secrets_scan.SecretsScan,
    ]
    return {cls.name: cls for cls in found}


ORDER = (
    "agent-kill", "indexer-kill", "dialog-kill", "connect-kill", "schema-change", "milvus-down",
    "postgres-restart", "broker-kill", "link-cut", "split-brain", "region-loss", "poison-storm", "secrets",
)


def build(name: str) -> Scenario:
    classes = _classes()
    if name not in classes:
        raise BadInput(f"unknown scenario {name!r}; known: {', '.join(ORDER)}")
    return classes[name]()


def describe() -> list[tuple[str, str, int]]:
    """(name, what it does, trials in a full run) of every scenario."""
    classes = _classes()
    return [(n, classes[n].summary, classes[n].full_trials) for n in ORDER]
