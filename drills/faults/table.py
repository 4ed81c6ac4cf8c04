"""The suite's table, rendered from the results dict (the one ``--json`` writes), so the table of
any saved run can be printed again: ``regionsync faults --show FILE [--markdown]``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report import load, save  # the same JSON files as the bench's

__all__ = ["all_ok", "combine", "load", "markdown", "render", "rows", "save"]

HEADERS = ("scenario", "trials", "faults", "lost", "stale docs", "duplicates absorbed", "converge p50 / max",
           "turns/s in fault vs before: min / median", "notes")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _availability(row: dict[str, Any]) -> str:
    # Runs saved before the column existed have neither key: "-".
    low, mid = row.get("availability_min"), row.get("availability_p50")
    return "-" if low is None and mid is None else f"{_ratio(low)} / {_ratio(mid)}"


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for sc in results["scenarios"]:
        row = sc["summary"]
        converge = f"{_secs(row['converge_p50_s'])} / {_secs(row['converge_max_s'])}"
        if row["not_converged"]:
            converge += f" ({row['not_converged']} did not)"
        notes = sc.get("note") or ""
        if row.get("problems"):
            notes = f"{row['problems']} problem(s): {row['problem_examples'][0]}" + (f"; {notes}" if notes else "")
        if row["errors"]:
            notes = f"{row['errors']} trial(s) failed: {row['error_examples'][0]}" + (f"; {notes}" if notes else "")
        out.append((
            sc["name"], str(row["trials"]), str(row["faults"]), str(row["lost"]), str(row["stale"]),
            str(row["duplicates"]), converge, _availability(row), notes,
        ))
    return out


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One table of a run made in parts (``--show`` given several files): each scenario's row from
    the last part that ran it, so a part run again after an earlier one was stopped supersedes it;
    each row's notes start with its part's commit, and the footer has a line per part."""
    chosen: dict[str, dict[str, Any]] = {}
    for part in parts:
        commit = str(part.get("commit") or "?")[:7]
        for sc in part["scenarios"]:
            chosen.pop(sc["name"], None)  # re-inserted: the order is the order the parts ran them
            chosen[sc["name"]] = {**sc, "note": f"at {commit}" + (f"; {sc['note']}" if sc.get("note") else "")}
    return {"scenarios": list(chosen.values()), "parts": list(parts)}


def render(results: dict[str, Any], width: int = 60) -> str:
    """A plain-text table (notes wrapped at ``width`` characters)."""
    body = [tuple(_clip(c, width) if i == len(HEADERS) - 1 else c for i, c in enumerate(r)) for r in rows(results)]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(HEADERS)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    verdict = "every scenario: 0 lost, 0 stale, converged" if all_ok(results) else "FAILURES: see the rows above"
    return "\n".join([*out, "", verdict, *_aborted(results), _footer(results)])


def markdown(results: dict[str, Any]) -> str:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows(results)]
    return "\n".join([*out, "", *_aborted(results), _footer(results)])


def all_ok(results: dict[str, Any]) -> bool:
    if "parts" in results:  # a run in parts: every row counts; a stopped part's later rows were superseded
        return all(sc["summary"]["ok"] for sc in results["scenarios"])
    return ("aborted" not in results and not results.get("partial")
            and all(sc["summary"]["ok"] for sc in results["scenarios"]))


def _aborted(results: dict[str, Any]) -> list[str]:
    out = []
    if results.get("partial"):
        out.append("PARTIAL: the run was stopped (or is still going): the rows above are the trials it had finished")
    if "aborted" in results:
        out.append(f"ABORTED: {results['aborted']}; not run: {', '.join(results.get('not_run') or []) or '-'}")
    return out


def _footer(results: dict[str, Any]) -> str:
    if "parts" in results:
        return "\n".join(f"part {i} (commit {str(p.get('commit'))[:7]}{', stopped' if p.get('partial') else ''}): "
                         f"{_footer(p)}" for i, p in enumerate(results["parts"], 1))
    m = results.get("machine") or {}
    w = results.get("workload") or {}
    return (
        f"{results.get('started', '?')}, seed {results.get('seed')}, {'quick' if results.get('quick') else 'full'} run, "
        f"{results.get('seconds', 0):.0f}s; {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('ram_gb', '?')} GB, "
        f"load {m.get('load_start')}; workload: {w.get('doc_rate')} document commits/s, {w.get('users')} customers "
        f"(a turn every ~{w.get('think_s')}s each)"
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


