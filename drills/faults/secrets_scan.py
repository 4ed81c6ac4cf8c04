"""Every log file the stack wrote over the whole run, and the output of every CLI command the
suite ran (plus a round of the commands an operator runs), searched for every configured secret.
The suite's stack makes its secrets up (runner.py), so a hit cannot be a coincidence."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from drills.faults.checks import LogFolder
from drills.faults.context import FaultContext
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.scenario import Scenario
from regionsync.settings import Settings
from regionsync.stack import postgres

# What an operator runs against a stack, bad input included (errors must not echo secrets either).
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("settings",),
    ("stack", "status", "--json"),
    ("lag", "--json"),
    ("region", "status"),
    ("connectors", "status"),
    ("reconcile", "--json"),
    ("search", "standby region", "--region", "east", "--json"),
    ("reconcile", "--region", "nowhere"),
    ("replay", "no.such.topic", "--to-topic", "x", "--dry-run"),
)


def secrets_of(settings: Settings) -> dict[str, str]:
    """Every configured secret that is set, by setting name (with its URL-encoded form if it differs)."""
    out = {}
    for name, value in settings:
        if isinstance(value, SecretStr) and value.get_secret_value():
            secret = value.get_secret_value()
            out[name] = secret
            if quote(secret, safe="") != secret:
                out[f"{name} (URL-encoded)"] = quote(secret, safe="")
    return out


def log_files(settings: Settings) -> Iterator[Path]:
    """The stack's logs: every process's (STATE/logs), Postgres' server log."""
    logs = settings.state_dir / "logs"
    if logs.exists():
        yield from sorted(p for p in logs.rglob("*") if p.is_file())
    ddir = postgres.data_dir(settings)
    extra = sorted((ddir / "log").glob("*")) if (ddir / "log").exists() else []
    for candidate in (ddir / "server.log", *extra):
        if candidate.is_file():
            yield candidate


def scan(settings: Settings, texts: Sequence[str]) -> tuple[list[str], int, int]:
    """(hits as "secret name in where", files scanned, bytes scanned)."""
    wanted = {name: secret.encode() for name, secret in secrets_of(settings).items()}
    hits: list[str] = []
    files = size = 0
    for path in log_files(settings):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        files += 1
        size += len(data)
        hits += [f"{name} in {path.name}" for name, secret in wanted.items() if secret in data]
    for i, text in enumerate(texts):
        data = text.encode()
        size += len(data)
        first = text.splitlines()[0] if text else f"output {i}"
        hits += [f"{name} in the output of {first}" for name, secret in wanted.items() if secret in data]
    return hits, files, size


class SecretsScan(Scenario):
    name = "secrets"
    full_trials, quick_trials = 1, 1
    summary = "every log file and CLI output of the run scanned for the configured secrets"

    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult:
        t0 = time.monotonic()
        for args in COMMANDS:
            ctx.cli(*args, timeout=300)
        hits, files, size = scan(ctx.settings, ctx.outputs)
        notes = {
            "secrets": sorted(secrets_of(ctx.settings)),
            "files_scanned": files,
            "cli_outputs_scanned": len(ctx.outputs),
            "megabytes_scanned": round(size / 1e6, 1),
            "found": hits,
        }
        return TrialResult(plan, 0, 0, 0, 0, round(time.monotonic() - t0, 2), notes=notes,
                           problems=tuple(f"secret leaked: {h}" for h in hits))

    def note(self, trials: Sequence[TrialResult]) -> str:
        if not trials:
            return ""
        n = trials[-1].notes
        return (f"{len(n.get('secrets', []))} secrets, {n.get('files_scanned')} log files and "
                f"{n.get('cli_outputs_scanned')} CLI outputs ({n.get('megabytes_scanned')} MB): "
                f"{len(n.get('found', []))} found")
