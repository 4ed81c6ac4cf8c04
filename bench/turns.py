"""Bench row: a dialog turn's latency in both acknowledgement modes (serve/acks.py).

``local``: the turn is acknowledged once the active region's broker holds its events.
``local``, unsealed: the same with ``dialog_seal`` off, for what sealing a turn costs (the key's
lookup in the region's database and AES-GCM over the personal fields: dialog/sealing.py).
``mirrored``: also once every other region's broker holds them (the replicator's checkpoint
there), so a region lost right after costs no acknowledged turn. Measured in this process, on
the bench's stack, through the region service's own code (``RegionService.turn``: the role row,
the dialog manager, the publisher, the acknowledgement), with an order inquiry (a tool call, no
search: the search's cost is row 8's). The mirrored mode's wait for the standby is reported apart.
A turn refused because no standby is in sync (503 for a customer, who retries) is tried again
after a second, as a client would; the refusals are counted, and only answered turns are timed.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from regionsync.settings import Settings

MODES = ("local", "mirrored")
RUNS = (("local", "local", True), ("mirrored", "mirrored", True), ("local_unsealed", "local", False))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(settings: Settings, turns: int = 200, warmup: int = 10) -> dict[str, Any]:
    from serve.errors import NotInSync
    from serve.region import RegionService
    from serve.roles import active_region

    region = active_region(settings)
    out: dict[str, Any] = {"region": region, "turns_per_mode": turns}
    for name, mode, sealed in RUNS:
        service = RegionService(settings.model_copy(update={"dialog_ack_mode": mode, "dialog_seal": sealed}), region,
                                background=False)
        try:
            latencies: list[float] = []
            waits: list[float] = []
            refused = 0
            session = f"bench-turns-{name}-{secrets.token_hex(3)}"
            for i in range(warmup + turns):
                message = {"text": f"where is order A-{1001 + i % 3}?", "intent": "inquire_order",
                           "slots": {"order_id": f"A-{1001 + i % 3}"}}
                deadline = time.monotonic() + 120
                while True:
                    t0 = time.perf_counter()
                    try:
                        service.turn(f"{session}-{i // 6}", message)  # a new session every 6 turns, as customers do
                        break
                    except NotInSync:
                        refused += 1
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(1.0)
                took = time.perf_counter() - t0
                if i >= warmup:
                    latencies.append(took * 1000)
                    if service.last_mirror_wait_s is not None:
                        waits.append(service.last_mirror_wait_s * 1000)
            out[name] = {
                "p50_ms": round(_percentile(latencies, 0.5), 2), "p99_ms": round(_percentile(latencies, 0.99), 2),
                "mean_ms": round(sum(latencies) / len(latencies), 2),
                "standby_wait_p50_ms": round(_percentile(waits, 0.5), 2) if waits else None,
                "standby_wait_p99_ms": round(_percentile(waits, 0.99), 2) if waits else None,
                "refused_not_in_sync": refused,
            }
        finally:
            service.close()
    out["mirrored_over_local_p50"] = round(out["mirrored"]["p50_ms"] / out["local"]["p50_ms"], 2)
    out["sealed_over_unsealed_p50"] = round(out["local"]["p50_ms"] / out["local_unsealed"]["p50_ms"], 2)
    return out
