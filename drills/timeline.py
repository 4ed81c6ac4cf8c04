"""The drill's timeline plot (matplotlib, rendered to an SVG string for the HTML report).

One row per probed region (each probe: a green tick answered ready, a red cross missed), one for
searches (errors in red), one per customer (each acknowledged turn a tick in its region's
colour, each outage a red bar); vertical lines at the failure, the detection, the promotion and
the first answer of the new region; the RTO span shaded. Time is seconds from the failure.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; set before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402

REGION_COLOURS = ("#1f77b4", "#e377c2", "#8c564b", "#17becf", "#bcbd22")


def render_svg(report: Mapping[str, Any]) -> str:
    """The timeline of a drill report (the JSON model of drills/report.py) as an SVG document."""
    t = report["timeline"]
    zero = t["fail_at"]
    regions: Sequence[str] = report["drill"]["regions"]
    colour = {r: REGION_COLOURS[i % len(REGION_COLOURS)] for i, r in enumerate(regions)}
    customers: Sequence[Mapping[str, Any]] = report["customers"]
    rows = [f"probe {r}" for r in regions] + ["searches"] + [f"customer {c['customer']}" for c in customers]
    y = {name: len(rows) - i for i, name in enumerate(rows)}

    fig, ax = plt.subplots(figsize=(12, 2.2 + 0.28 * len(rows)), dpi=100)
    for r in regions:
        probes = [p for p in report["probes"] if p["region"] == r]
        ok = [p["done_at"] - zero for p in probes if p["ok"]]
        miss = [p["done_at"] - zero for p in probes if not p["ok"]]
        ax.scatter(ok, [y[f"probe {r}"]] * len(ok), marker="o", s=14, color="#2ca02c")
        ax.scatter(miss, [y[f"probe {r}"]] * len(miss), marker="x", s=40, color="#d62728")

    s_ok = [s["at"] - zero for s in report["searches"] if s["ok"]]
    s_err = [s["at"] - zero for s in report["searches"] if not s["ok"]]
    ax.scatter(s_ok, [y["searches"]] * len(s_ok), marker=".", s=12, color="#7f7f7f")
    ax.scatter(s_err, [y["searches"]] * len(s_err), marker="x", s=30, color="#d62728")

    end = t["stopped_at"] - zero
    for c in customers:
        row = y[f"customer {c['customer']}"]
        bars = [(start - zero, ((stop if stop is not None else t["stopped_at"]) - start)) for start, stop in c["intervals"]]
        if bars:
            ax.broken_barh(bars, (row - 0.3, 0.6), facecolors="#d62728", alpha=0.35)
        for r in regions:
            acks = [a - zero for a in c["acks"].get(r, [])]
            ax.scatter(acks, [row] * len(acks), marker="|", s=60, color=colour[r])

    lines = [
        ("failure", t["fail_at"], "#d62728", "-"),
        ("detected", t["detected_at"], "#ff7f0e", "--"),
        ("promotion asked", t["promote_started_at"], "#9467bd", ":"),
        ("promoted", t["promoted_at"], "#9467bd", "-"),
        (f"first answer from {report['drill']['new_region']}", t["first_good_new"], "#2ca02c", "--"),
    ]
    for label, at, col, style in lines:
        if at is not None:
            ax.axvline(at - zero, color=col, linestyle=style, linewidth=1.6, label=f"{label} ({at - zero:+.1f} s)")
    if t["last_good_failed"] is not None and t["first_good_new"] is not None:
        ax.axvspan(t["last_good_failed"] - zero, t["first_good_new"] - zero, color="#d62728", alpha=0.08,
                   label=f"RTO {t['first_good_new'] - t['last_good_failed']:.1f} s")
    ax.scatter([], [], marker="o", s=14, color="#2ca02c", label="probe: ready")
    ax.scatter([], [], marker="x", s=40, color="#d62728", label="probe missed / search failed")
    for r in regions:  # legend entries for the answer colours
        ax.scatter([], [], marker="|", s=60, color=colour[r], label=f"turn answered by {r}")
    ax.broken_barh([], (0, 0), facecolors="#d62728", alpha=0.35, label="customer waiting (outage)")

    ax.set_yticks([y[n] for n in rows], rows, fontsize=8)
    # The story is around the failure: show a few probe intervals before it, not the whole warm-up.
    start = max(t["started_at"] - zero, -max(10.0, 3 * float(report["drill"]["probe_interval_s"])))
    ax.set_xlim(start - 1, end + 1)
    ax.set_ylim(0.3, len(rows) + 0.7)
    ax.set_xlabel(f"seconds from the failure of {report['drill']['failed_region']} ({report['drill']['mode']})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"Failover drill: {report['drill']['failed_region']} fails, {report['drill']['new_region']} takes over")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: the SVG goes inline in HTML
