"""The token book without a service: where tokens come from, rotation by file, what a client
sends, the file `stack up` writes (fakes only: files in a temporary dir)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from regionsync.settings import Settings
from serve.auth import (
    TokenBook,
    TokenConfigError,
    bearer,
    caller_token,
    ensure_tokens_file,
    parse,
    tokens_path,
)

A1, A2, OP = "a" * 20 + "1", "a" * 20 + "2", "o" * 24


def settings(tmp_path: Path, env: str = "", file: Path | None = None) -> Settings:
    return Settings(state_dir=tmp_path / "state", api_tokens=SecretStr(env), api_tokens_file=file)


def test_tokens_come_from_the_environment_and_the_file_with_their_roles(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# comment\n\nassistant:{A2}\n")
    book = TokenBook(settings(tmp_path, f"assistant:{A1},operator:{OP}", file))
    assert book.identify(A1) is not None and book.identify(A1).role == "assistant"  # type: ignore[union-attr]
    assert book.identify(A2).where == "file:3"  # type: ignore[union-attr]
    assert book.identify(OP).role == "operator"  # type: ignore[union-attr]
    assert book.identify("a" * 20) is None and book.identify("") is None
    assert book.roles() == {"assistant", "operator"}


def test_a_rotation_in_the_file_is_seen_without_a_new_book(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"assistant:{A1}\n")
    book = TokenBook(settings(tmp_path, file=file))
    assert book.identify(A1) and not book.identify(A2)
    time.sleep(0.01)
    file.write_text(f"assistant:{A1}\nassistant:{A2}\n")
    assert book.identify(A1) and book.identify(A2)
    time.sleep(0.01)
    file.write_text(f"assistant:{A2}\n")
    assert not book.identify(A1) and book.identify(A2)
    file.unlink()
    assert not book.identify(A2) and book.roles() == set()


@pytest.mark.parametrize(("text", "words"), [
    ("assistant", "expected 'role:token'"),
    ("admin:" + "x" * 20, "unknown role 'admin'"),
    ("operator:short", "at least 16"),
])
def test_a_malformed_entry_is_refused_with_its_place_and_never_its_token(text: str, words: str) -> None:
    with pytest.raises(TokenConfigError, match=words) as err:
        parse(text, "file")
    assert "x" * 20 not in str(err.value) and "entry 1" in str(err.value)


def test_a_client_sends_the_last_token_of_its_role(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"assistant:{A1}\nassistant:{A2}\n")
    s = settings(tmp_path, f"operator:{OP}", file)
    assert caller_token(s, "assistant") == A2  # the newest: callers move to it during a rotation
    assert bearer(s, "operator") == {"Authorization": f"Bearer {OP}"}
    with pytest.raises(TokenConfigError, match="no operator token"):
        caller_token(settings(tmp_path, file=file), "operator")


def test_stack_up_writes_one_fresh_token_per_role_readable_by_its_owner_only(tmp_path: Path) -> None:
    s = settings(tmp_path)
    path = ensure_tokens_file(s)
    assert path == tokens_path(s) == tmp_path / "state" / "secrets" / "api-tokens"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    book = TokenBook(s)
    assert book.roles() == {"assistant", "operator"}
    first = caller_token(s, "assistant")
    assert ensure_tokens_file(s) is None and caller_token(s, "assistant") == first  # kept across stack ups
    assert ensure_tokens_file(settings(tmp_path / "other", f"assistant:{A1}")) is None  # the environment's suffice


def test_an_entry_never_shows_its_token() -> None:
    (entry,) = parse(f"operator:{OP}", "env", ",")
    assert OP not in repr(entry) and OP not in str(entry)


def test_a_token_file_in_a_directory_the_operator_named_leaves_that_directory_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    path = ensure_tokens_file(settings(tmp_path, file=shared / "api-tokens"))
    assert path == shared / "api-tokens" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # never /tmp made owner-only, say
