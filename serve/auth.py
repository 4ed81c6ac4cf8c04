"""Who may call a region service: bearer tokens, each with a role.

Roles: ``assistant`` (the RAG assistant's backend: search, answers, dialog turns, reading a
session) and ``operator`` (promotion and the conflict report). A role is not a superset of the
other: an operator token reads no conversation, an assistant token promotes nothing. /healthz,
/readyz and /metrics stay open (probes and Prometheus scrape them).

Tokens come from the environment (``REGIONSYNC_API_TOKENS="role:token,role:token"``) and from a
file of ``role:token`` lines (``REGIONSYNC_API_TOKENS_FILE``; default
``<state_dir>/secrets/api-tokens``, written with fresh random tokens by ``regionsync stack up``),
never from the command line. The service re-reads the file when it changes, so a rotation needs no
restart: add the new token to the file, move the callers to it (a caller uses the *last* token of
its role), remove the old one. Tokens are compared in constant time, every known token each time
(no early exit that would tell how many characters matched, or which token).

What is logged about a caller is its role and which entry of the book matched ("file:3",
"env:1"), never the token.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from regionsync.settings import Settings
from serve.errors import ServeError

ASSISTANT = "assistant"
OPERATOR = "operator"
ROLES = (ASSISTANT, OPERATOR)


class TokenConfigError(ServeError):
    """The token book cannot be read (a malformed line, an unknown role, no token at all)."""


@dataclass(frozen=True)
class Entry:
    role: str
    token: bytes
    where: str  # "env:2", "file:3": names the entry in logs without showing it

    def __repr__(self) -> str:  # never the token
        return f"Entry({self.role}, {self.where})"


@dataclass(frozen=True)
class Caller:
    role: str
    where: str


def parse(text: str, source: str, separator: str = "\n") -> list[Entry]:
    """``role:token`` entries; blank parts and ``#`` comments are skipped."""
    out: list[Entry] = []
    for n, raw in enumerate(text.split(separator), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        role, sep, token = line.partition(":")
        role, token = role.strip(), token.strip()
        if not sep or not token:
            raise TokenConfigError(f"{source} entry {n}: expected 'role:token'")
        if role not in ROLES:
            raise TokenConfigError(f"{source} entry {n}: unknown role {role!r} (roles: {', '.join(ROLES)})")
        if len(token) < 16:
            raise TokenConfigError(f"{source} entry {n}: a {role} token must have at least 16 characters")
        out.append(Entry(role, token.encode(), f"{source}:{n}"))
    return out


def tokens_path(settings: Settings) -> Path:
    return settings.api_tokens_file or settings.state_dir / "secrets" / "api-tokens"


class TokenBook:
    """The tokens a region service accepts: the environment's, and the file's as it is now
    (re-read when its modification time or size changes)."""

    def __init__(self, settings: Settings) -> None:
        self._env = parse(settings.api_tokens.get_secret_value(), "env", ",")
        self._path = tokens_path(settings)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._file: list[Entry] = []
        self.entries()  # a malformed file fails the start, not the first request

    def entries(self) -> list[Entry]:
        with self._lock:
            try:
                st = self._path.stat()
                stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._file = parse(self._path.read_text(), "file") if stamp is not None else []
                self._stamp = stamp
            return [*self._env, *self._file]

    def identify(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None. Compares against every entry, in constant time each."""
        given = token.encode()
        found: Entry | None = None
        for entry in self.entries():
            if hmac.compare_digest(given, entry.token) and found is None:
                found = entry
        return Caller(found.role, found.where) if found is not None else None

    def roles(self) -> set[str]:
        return {e.role for e in self.entries()}


def caller_token(settings: Settings, role: str) -> str:
    """The token a client of ``role`` sends: the last of its role (the environment's first, then the file's)."""
    entries = parse(settings.api_tokens.get_secret_value(), "env", ",")
    path = tokens_path(settings)
    if path.exists():
        entries += parse(path.read_text(), "file")
    mine = [e for e in entries if e.role == role]
    if not mine:
        raise TokenConfigError(f"no {role} token: set REGIONSYNC_API_TOKENS or write {path} "
                               "(`regionsync stack up` writes one)")
    return mine[-1].token.decode()


def bearer(settings: Settings, role: str) -> dict[str, str]:
    """The Authorization header of a client of ``role``."""
    return {"Authorization": f"Bearer {caller_token(settings, role)}"}


def ensure_tokens_file(settings: Settings, roles: Iterable[str] = ROLES) -> Path | None:
    """Write a token file with one fresh random token per role unless tokens are configured
    (environment or an existing file). Readable by its owner only."""
    path = tokens_path(settings)
    if path.exists() or settings.api_tokens.get_secret_value():
        return None
    if not path.parent.exists():  # ours: owner-only (a directory the operator named is left as it is)
        path.parent.mkdir(parents=True, mode=0o700)
    lines = ["# regionsync region-service tokens, 'role:token' per line (serve/auth.py).",
             "# Rotate: add a line, move the callers (they use the last token of their role), remove the old line."]
    lines += [f"{role}:{secrets.token_urlsafe(32)}" for role in roles]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it meanwhile: theirs stands
        return None
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
