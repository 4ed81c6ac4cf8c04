"""Everything the stack wrote and said over the whole run, searched for every configured secret:

* every regular file under the state dir: the logs of every process (``logs/``), the config files
  the stack renders (``connect/worker.properties`` and ``connect/log4j2.properties``,
  ``prometheus/prometheus.yml`` when Prometheus runs, Postgres' ``postgresql.conf``,
  ``pg_hba.conf``, ``postmaster.opts`` and its server log), pid files, the change agent's
  data dir, checkpoints... except the stores' own data (:func:`excluded`);
* the output of every CLI command the suite ran, plus a round of the commands an operator runs;
* the answers of Kafka Connect's REST API (``GET /connectors`` and, for each connector, its
  info, config, status and tasks), which return a connector's config as it was registered.

The suite's stack makes its secrets up (runner.py), so a hit cannot be a coincidence.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
import requests
from pydantic import SecretStr

from drills.faults.checks import LogFolder
from drills.faults.context import FaultContext
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.scenario import Scenario
from regionsync.settings import Settings
from serve import auth
from stack import milvus, postgres, seaweed

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
    found: dict[str, str] = {}
    for name, value in settings:
        if name == "api_tokens":
            continue  # a list of tokens: each one is looked for (below)
        if isinstance(value, SecretStr) and value.get_secret_value():
            found[name] = value.get_secret_value()
    entries = auth.parse(settings.api_tokens.get_secret_value(), "env", ",")
    if auth.tokens_path(settings).exists():
        entries += auth.parse(auth.tokens_path(settings).read_text(), "file")
    for entry in entries:
        found[f"{entry.role} API token ({entry.where})"] = entry.token.decode()
    out = dict(found)
    for name, secret in found.items():
        if quote(secret, safe="") != secret:
            out[f"{name} (URL-encoded)"] = quote(secret, safe="")
    return out


def excluded(settings: Settings) -> dict[Path, str]:
    """The directories under the state dir that are not scanned, and why: the stores' own data
    (rows, vectors, samples), binary and large, not text the stack renders or prints. What an
    operator sees of it goes through the answers that are scanned (a connector's config, stored
    in the broker's config topic, is scanned in Connect's REST answers). Each region's object store
    holds its broker's log (every record of every topic, the connector's config record among them)
    and the dialog snapshots: data, read through the answers that show it."""
    out = {
        **{postgres.data_dir(settings, r): f"{r}'s Postgres cluster files and WAL (its top-level files, the "
                                           "rendered configs and server log, and log/ are scanned)"
           for r in settings.regions},
        **{milvus.data_dir(settings, r): f"{r}'s Milvus data (segments, write-ahead log)" for r in settings.regions},
        **{seaweed.data_dir(settings, r): f"{r}'s object store data (the broker's log, dialog snapshots; its "
                                          "mini.options holds no key: they come from the environment)"
           for r in settings.regions},
        settings.state_dir / "prometheus" / "data": "Prometheus' time series database",
        auth.tokens_path(settings).parent: "the API token file itself (owner-only), where the tokens are meant to be",
    }
    return out


def state_files(settings: Settings) -> Iterator[Path]:
    """Every regular file under the state dir (symbolic links not followed) outside :func:`excluded`;
    in Postgres' data dir, its top-level files and its ``log/`` directory."""
    root = settings.state_dir
    pgs = {postgres.data_dir(settings, r) for r in settings.regions}
    skip = set(excluded(settings)) - pgs  # entered, for their top-level files and log/
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here in pgs:
            dirnames[:] = [d for d in dirnames if d == "log"]
        else:
            dirnames[:] = sorted(d for d in dirnames if here / d not in skip)
        for name in sorted(filenames):
            path = here / name
            if path.is_file() and not path.is_symlink():
                yield path


CONNECT_PATHS = ("", "/config", "/status", "/tasks")  # after /connectors/NAME


@dataclass(frozen=True)
class Answer:
    """A text the scan reads that is not a file: ``where`` names it in a hit."""

    where: str
    text: str


Get = Callable[[str], requests.Response]


def connect_answers(connect_url: str, get: Get | None = None) -> tuple[list[Answer], list[str]]:
    """Kafka Connect's REST answers about every connector, as the worker returns them; and what
    could not be read (a worker that does not answer is a gap in the scan, said as such)."""
    fetch: Get = get or (lambda url: requests.get(url, timeout=10))
    base = connect_url.rstrip("/")
    answers: list[Answer] = []
    gaps: list[str] = []

    def read(path: str) -> str | None:
        try:
            resp = fetch(base + path)
        except requests.RequestException as exc:
            gaps.append(f"Connect did not answer GET {path}: {type(exc).__name__}")
            return None
        answers.append(Answer(f"Connect's answer to GET {path}", f"HTTP {resp.status_code}\n{resp.text}"))
        if resp.status_code != 200:
            gaps.append(f"Connect answered GET {path} with HTTP {resp.status_code}")
            return None
        return resp.text

    listing = read("/connectors")
    try:
        names = orjson.loads(listing) if listing is not None else []
    except orjson.JSONDecodeError:
        names = None
    if not isinstance(names, list):
        gaps.append("Connect's GET /connectors is not a list of names")
        names = []
    for name in names:
        for suffix in CONNECT_PATHS:
            read(f"/connectors/{quote(str(name), safe='')}{suffix}")
    return answers, gaps


def scan(settings: Settings, outputs: Sequence[str], answers: Sequence[Answer] = ()) -> tuple[list[str], list[Path], int]:
    """(hits as "secret name in where", files scanned, bytes scanned). ``outputs``: CLI outputs
    (their first line says which command); ``answers``: other texts read (Connect's REST)."""
    wanted = {name: secret.encode() for name, secret in secrets_of(settings).items()}
    hits: list[str] = []
    files: list[Path] = []
    size = 0
    for path in state_files(settings):
        try:
            data = path.read_bytes()
        except OSError:  # gone meanwhile (a pid file, a rotated log)
            continue
        files.append(path)
        size += len(data)
        where = path.relative_to(settings.state_dir)
        hits += [f"{name} in {where}" for name, secret in wanted.items() if secret in data]
    texts = [Answer(f"the output of {text.splitlines()[0] if text else f'output {i}'}", text)
             for i, text in enumerate(outputs)]
    for answer in [*texts, *answers]:
        data = answer.text.encode()
        size += len(data)
        hits += [f"{name} in {answer.where}" for name, secret in wanted.items() if secret in data]
    return hits, files, size


class SecretsScan(Scenario):
    name = "secrets"
    full_trials, quick_trials = 1, 1
    summary = "every log file and CLI output of the run scanned for the configured secrets"

    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult:
        t0 = time.monotonic()
        for args in COMMANDS:
            ctx.cli(*args, timeout=300)
        answers, gaps = connect_answers(ctx.settings.connect_url)
        hits, files, size = scan(ctx.settings, ctx.outputs, answers)
        notes = {
            "secrets": sorted(secrets_of(ctx.settings)),
            "files_scanned": len(files),
            # What besides the logs was read (the rendered configs among them), to show the scan's reach.
            "files": [str(r) for p in files if (r := p.relative_to(ctx.settings.state_dir)).parts[0] != "logs"][:100],
            "not_scanned": {str(p.relative_to(ctx.settings.state_dir)): why for p, why in excluded(ctx.settings).items()},
            "cli_outputs_scanned": len(ctx.outputs),
            "connect_answers_scanned": len(answers),
            "megabytes_scanned": round(size / 1e6, 1),
            "found": hits,
        }
        problems = [*(f"secret leaked: {h}" for h in hits), *(f"not scanned: {g}" for g in gaps)]
        return TrialResult(plan, 0, 0, 0, 0, round(time.monotonic() - t0, 2), notes=notes, problems=tuple(problems))

    def note(self, trials: Sequence[TrialResult]) -> str:
        if not trials:
            return ""
        n = trials[-1].notes
        found = n.get("found", [])
        return (f"{len(n.get('secrets', []))} secrets, {n.get('files_scanned')} files under the state dir, "
                f"{n.get('cli_outputs_scanned')} CLI outputs and {n.get('connect_answers_scanned', 0)} Connect REST "
                f"answers ({n.get('megabytes_scanned')} MB): {len(found)} found"
                + (f" ({'; '.join(found[:3])})" if found else ""))
