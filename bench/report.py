"""The bench's table, rendered from the results dict (the same dict ``--json`` writes, so a table
can be rebuilt from any saved run: ``regionsync bench --show FILE``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import orjson

# Targets of the issue: goals to measure against, not assertions.
TARGET_RATIO = 0.9
TARGET_NOCHANGE_DOCS_PER_S = 2000.0
TARGET_P50_MS = 300.0
TARGET_P99_MS = 1000.0
TARGET_PEER_SPEEDUP = 10.0
TARGET_RSS_BYTES = int(2.5 * 1024**3)  # issue 8 (was 3 GB in issue 4)
TARGET_DIALOG_EVENTS_PER_S = 20_000.0
TARGET_SEARCH_P50_MS = 20.0
TARGET_SEARCH_P99_MS = 100.0

ROWS = ("1", "2", "3a", "3b", "4", "5a", "5b", "6", "7", "8", "9")


class Row(NamedTuple):
    """One row of the bench's table."""

    key: str  # "1", "3a", ...: the numbering
    measurement: str
    result: str
    target: str
    verdict: str  # "met", "MISSED", "FAILED" (no figures: the error is in ``result``) or "-"


def _n(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def failed_rows(r: dict[str, Any]) -> list[str]:
    """The rows that did not produce figures (their error is in the results)."""
    return [row.key for row in rows(r) if row.verdict == "FAILED"]


def _failed(key: str, label: str, phase: dict[str, Any] | None, target: str) -> Row:
    if phase is None:  # a saved run of a version that did not measure this row yet
        return Row(key, label, "not measured in this run", target, "-")
    return Row(key, label, f"failed: {phase['error']}", target, "FAILED")


def _ok(phase: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    return phase is not None and "error" not in phase


def rows(r: dict[str, Any]) -> list[Row]:
    """Each row of the issue; a row whose measurement failed says why and is marked FAILED."""
    out = [
        embedding_limit_row(r["settings"], r.get("embed_limit")),
        changed_docs_row(r.get("changed")),
        no_embedding_row("3a", "updates, embedded text unchanged", r.get("unchanged")),
        no_embedding_row("3b", "deletes", r.get("deletes")),
        freshness_row(r.get("freshness")),
        *peer_rows(r.get("peer")),
        dialog_rebuild_row(r.get("dialog")),
        rss_row(r["rss"]),
        search_row(r.get("search")),
        http_search_row(r.get("http_search"), r["corpus"]["chunks"]),
    ]
    if "turns" in r:
        out.append(turn_latency_row(r.get("turns")))
    if "links" in r:
        out.append(link_row(r.get("links")))
    return out


def embedding_limit_row(s: dict[str, Any], lim: dict[str, Any] | None) -> Row:
    """Row 1: the model alone (the ceiling every other throughput is compared with)."""
    if not _ok(lim):
        return _failed("1", "embedding limit", lim, "-")
    return Row(
        "1", f"embedding limit: model alone, batch {s['embed_batch_size']}, {s['embed_threads']} threads",
        f"{_n(lim['passages_per_s'], 1)} passages/s (before {_n(lim['before']['passages_per_s'], 1)}, "
        f"after {_n(lim['after']['passages_per_s'], 1)}; {lim['before']['passages']} passages each)",
        "-", "-",
    )


def changed_docs_row(ch: dict[str, Any] | None) -> Row:
    """Row 2: documents with new text, commit -> upserted in every region, against row 1."""
    label, target = "changed docs (new text), commit -> upserted in every region", f">= {TARGET_RATIO} x row 1"
    if not _ok(ch) or "ratio_to_limit" not in ch:
        return _failed("2", label, ch, target)
    return Row(
        "2", f"{label} ({_n(ch['docs'])} docs)",
        f"{_n(ch['docs_per_s'], 1)} docs/s = {_n(ch['passages_per_s'], 1)} passages/s; {ch['ratio_to_limit']:.2f} x row 1",
        target, _verdict(ch["ratio_to_limit"] >= TARGET_RATIO),
    )


def no_embedding_row(key: str, title: str, ph: dict[str, Any] | None) -> Row:
    """Rows 3a and 3b: changes that must reach every region without one embedding."""
    target = f">= {_n(TARGET_NOCHANGE_DOCS_PER_S)} docs/s, 0 embeddings"
    if not _ok(ph):
        return _failed(key, f"{title}, commit -> every region", ph, target)
    ok = ph["docs_per_s"] >= TARGET_NOCHANGE_DOCS_PER_S and ph["embedded"] == 0 and ph["cache_rows_added"] == 0
    return Row(
        key, f"{title}, commit -> every region ({_n(ph['docs'])} docs)",
        f"{_n(ph['docs_per_s'])} docs/s; {ph['embedded']} embeddings computed (cache +{ph['cache_rows_added']})",
        target, _verdict(ok),
    )


def freshness_row(fr: dict[str, Any] | None) -> Row:
    """Row 4: commit -> searchable in every region, under a steady load."""
    target = f"p50 < {_n(TARGET_P50_MS)} ms, p99 < {_n(TARGET_P99_MS)} ms"
    if not _ok(fr):
        return _failed("4", "freshness, commit -> searchable in every region", fr, target)
    ok = fr["p50_ms"] < TARGET_P50_MS and fr["p99_ms"] < TARGET_P99_MS and fr["not_seen"] == 0
    return Row(
        "4", f"freshness, commit -> searchable in every region, at {_n(fr['rate_per_s'], 1)} docs/s "
             f"({fr['load_fraction']:.0%} of row 2)",
        f"p50 {_n(fr['p50_ms'])} ms, p99 {_n(fr['p99_ms'])} ms ({fr['changes']} changes"
        + (f", {fr['not_seen']} never seen" if fr["not_seen"] else "") + ")",
        target, _verdict(ok),
    )


def peer_rows(peer: dict[str, Any] | None) -> list[Row]:
    """Rows 5a, 5b, ...: a fraction of the corpus changed, against LangChain's indexing API."""
    label = "peer: LangChain indexing API"
    if not _ok(peer):
        return [_failed("5", label, peer, f">= {TARGET_PEER_SPEEDUP:.0f}x")]
    if not peer.get("available"):
        return [Row("5", label, f"not available ({peer.get('reason')})", "-", "-")]
    # Runs of 2026-11 before the 0.1% row kept one run's figures in the peer dict itself.
    runs = peer.get("runs") or [{"fraction": 0.01, **peer}]
    return [_peer_run_row(f"5{'abcdefgh'[i]}", run, peer["corpus_docs"]) for i, run in enumerate(runs)]


def _peer_run_row(key: str, run: dict[str, Any], corpus_docs: int) -> Row:
    return Row(
        key, f"{run['changed_docs']} of {_n(corpus_docs)} docs changed ({run['fraction']:.1%}): "
             "seconds until the index reflects it",
        f"ours {run['ours_s']:.2f} s (every region), LangChain index() {run['theirs_s']:.2f} s "
        f"({run['theirs'].get('embed_seconds', 0):.1f} s of it embedding): {run['speedup']:.1f}x"
        + ("" if run.get("checked", True) else " (CHECK FAILED: see problems)"),
        f">= {TARGET_PEER_SPEEDUP:.0f}x", _verdict(run["speedup"] >= TARGET_PEER_SPEEDUP),
    )


def dialog_rebuild_row(dia: dict[str, Any] | None) -> Row:
    """Row 6: a region's dialog state rebuilt from the log, and restored from a snapshot."""
    if dia and "error" in dia:
        return Row("6", "dialog rebuild", f"failed: {dia['error']}", "-", "FAILED")
    if not dia:
        return Row("6", "dialog rebuild", "not available", "-", "-")
    return Row(
        "6", "dialog rebuild",
        f"full replay {_n(dia['full_replay_events_per_s'])} events/s"
        + (f" ({_n(dia['sealed_full_replay_events_per_s'])} sealed: {dia['sealed_over_plain_replay']:.2f}x)"
           if dia.get("sealed_full_replay_events_per_s") else "")
        + f"; restore {_n(dia['restore_sessions'])} "
        f"sessions (snapshot + {dia['restore_tail_events']} tail events) in {dia['restore_total_s']:.2f} s",
        f"full replay >= {_n(TARGET_DIALOG_EVENTS_PER_S)} events/s",
        _verdict(dia["full_replay_events_per_s"] >= TARGET_DIALOG_EVENTS_PER_S),
    )


def rss_row(rss: dict[str, Any]) -> Row:
    """Row 7: the whole stack's memory (sum of each service's peak)."""
    return Row(
        "7", "peak RSS, whole stack (sum of per-process peaks)",
        f"{rss['stack_total_bytes'] / 1024**3:.2f} GB over {len(rss['services'])} services "
        f"(bench driver apart: {rss['bench_process_bytes'] / 1024**3:.2f} GB)",
        f"< {TARGET_RSS_BYTES / 1024**3:.1f} GB", _verdict(rss["stack_total_bytes"] < TARGET_RSS_BYTES),
    )


def turn_latency_row(tu: dict[str, Any] | None) -> Row:
    """Row 10: a dialog turn, local vs mirrored acknowledgements: a figure, no target (the price of RPO 0)."""
    label = "dialog turn latency, local vs mirrored acknowledgements (an order inquiry, RegionService.turn)"
    if not _ok(tu):
        return _failed("10", label, tu, "reported")
    loc, mir = tu["local"], tu["mirrored"]
    return Row(
        "10", f"{label}, {tu['turns_per_mode']} turns each in {tu['region']}",
        f"local p50 {_n(loc['p50_ms'], 1)} ms, p99 {_n(loc['p99_ms'], 1)} ms; mirrored p50 {_n(mir['p50_ms'], 1)} ms, "
        f"p99 {_n(mir['p99_ms'], 1)} ms (waiting for the standby: p50 {_n(mir['standby_wait_p50_ms'] or 0, 1)} ms); "
        f"{tu['mirrored_over_local_p50']:.2f}x" + _unsealed(tu),
        "reported", "-",
    )


def link_row(li: dict[str, Any] | None) -> Row:
    """Row 11: what the mutual-TLS edge costs a replicator's read (bench/links.py): a figure, no target."""
    label = "a replicator's read of a broker, direct vs through its mutual-TLS edge"
    if not _ok(li):
        return _failed("11", label, li, "reported")
    d, e = li["direct"], li["edge"]
    return Row(
        "11", f"{label}, {li['records']} records of {li['record_bytes']} B from {li['region']}",
        f"direct {_n(d['records_per_s'])} records/s ({d['mb_per_s']:.1f} MB/s); edge {_n(e['records_per_s'])} "
        f"records/s ({e['mb_per_s']:.1f} MB/s); {li['edge_over_direct']:.2f}x",
        "reported", "-",
    )


def _unsealed(tu: dict[str, Any]) -> str:
    plain = tu.get("local_unsealed")
    if not plain:
        return ""
    return (f"; local without sealing p50 {_n(plain['p50_ms'], 1)} ms (sealing: "
            f"{tu['sealed_over_unsealed_p50']:.2f}x)")


def search_row(se: dict[str, Any] | None) -> Row:
    """Row 8: a region's Milvus searched directly."""
    label = "search latency per region (top-5, status filter)"
    if not _ok(se):
        return _failed("8", label, se, _SEARCH_TARGET)
    some: dict[str, Any] = next(iter(se["regions"].values()), {})
    return _search_row("8", f"search latency per region, top-{se['k']} with a status filter, "
                            f"{some.get('searches', 0)} queries at {_n(some.get('rows', 0))} chunks", se["regions"])


def http_search_row(hs: dict[str, Any] | None, chunks: int) -> Row:
    """Row 9: search through a region's HTTP service (model + index + JSON)."""
    label = "search through HTTP per region (GET /search on the region's service)"
    if not _ok(hs):
        return _failed("9", label, hs, _SEARCH_TARGET)
    some: dict[str, Any] = next(iter(hs["regions"].values()), {})
    return _search_row("9", f"search through HTTP per region, GET /search?k={hs['k']} on the region's service "
                            f"(model + index + JSON), {some.get('searches', 0)} queries at {_n(chunks)} chunks",
                       hs["regions"])


_SEARCH_TARGET = f"p50 < {_n(TARGET_SEARCH_P50_MS)} ms, p99 < {_n(TARGET_SEARCH_P99_MS)} ms per region"


def _search_row(key: str, label: str, regions: dict[str, Any]) -> Row:
    """Rows 8 and 9: p50 and p99 per region; met when every region is under both targets and
    every query found something."""
    ok = all(v["p50_ms"] is not None and v["p50_ms"] < TARGET_SEARCH_P50_MS and v["p99_ms"] < TARGET_SEARCH_P99_MS
             and not v["empty_results"] for v in regions.values())
    return Row(
        key, label,
        "; ".join(f"{name} p50 {_n(v['p50_ms'], 1)} ms, p99 {_n(v['p99_ms'], 1)} ms"
                  + (f" ({v['empty_results']} empty)" if v["empty_results"] else "") for name, v in regions.items()),
        _SEARCH_TARGET, _verdict(ok),
    )


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    head = [
        f"regionsync bench ({r['mode']} run, {r['duration_s']:.0f} s): {_n(r['corpus']['docs'])} documents, "
        f"{_n(r['corpus']['chunks'])} chunks, regions {'+'.join(r['settings']['regions'])}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']:.1f} GB RAM; load average "
        f"{m['load_start'][0]:.2f} at start, {m['load_end'][0]:.2f} at end",
        "",
    ]
    table = rows(r)
    header = ("#", "measurement", "result", "target", "")
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(5)]
    lines = [" | ".join(str(c).ljust(widths[i]) for i, c in enumerate(header)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    for row in table:
        lines.append(" | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    services = sorted(r["rss"]["services"].items(), key=lambda kv: -kv[1]["peak_bytes"])
    lines.append("")
    stages = (r.get("freshness") or {}).get("stages_p50_ms")
    if stages:
        lines.append("freshness stages, p50: " + ", ".join(f"{k.replace('_', ' ')} {v:,.0f} ms" for k, v in stages.items())
                     + " (commit -> Debezium's event -> change agent's record -> searchable in the last region)")
    retried = r.get("retries") or {}
    if retried.get("total") or retried.get("gave_up"):
        lines.append(f"transient errors in the bench's own probes, retried: {retried['total']} "
                     f"({', '.join(f'{k} {v}' for k, v in retried.get('by_probe', {}).items())})"
                     + (f"; gave up: {retried['gave_up']}" if retried.get("gave_up") else ""))
    failed = failed_rows(r)
    if failed:
        lines.append(f"rows that FAILED (their error is in the row): {', '.join(failed)}")
    lines.append("peak RSS per service: " + ", ".join(
        f"{name} {v['peak_bytes'] / 1024**2:,.0f} MB" + (f" ({v['processes']} procs, {v['how']})" if v["processes"] > 1 else "")
        for name, v in services
    ))
    lines.extend(cpu_lines(r))
    return "\n".join(head + lines)


def cpu_lines(r: dict[str, Any], top: int = 6) -> list[str]:
    """Per phase: the services that used the most CPU seconds, and the machine's other work."""
    out = []
    for phase, ph in (r.get("cpu") or {}).items():
        busiest = list(ph["services_cpu_s"].items())[:top]
        out.append(
            f"cpu, {phase} ({ph['seconds']:.0f} s wall, {ph['machine_cpu_s']:.0f} s machine): "
            + ", ".join(f"{name} {cpu:.1f} s" for name, cpu in busiest)
            + f"; not the stack: {ph['other_cpu_s']:.0f} s"
        )
    return out


def markdown(r: dict[str, Any]) -> str:
    """The same table as Markdown (for the README)."""
    out = ["| # | measurement | result | target | |", "|---|---|---|---|---|"]
    for row in rows(r):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(out)


def save(r: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data
