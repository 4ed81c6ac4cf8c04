"""A corpus of real text that needs no download: the docstrings of the Python standard library
installed on this machine (written by CPython's authors, not by us).

One document per module, class, function or method whose docstring is long enough to be worth
retrieving. Ids are stable (``py:<module>:<qualname>``), order is deterministic.
"""

from __future__ import annotations

import ast
import inspect
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SKIP_PARTS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__", "ensurepip",
              "turtledemo", "pydoc_data"}


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    title: str
    body: str
    tags: tuple[str, ...]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_roots() -> list[Path]:
    """The standard library first; then the installed third-party packages, for corpora larger
    than the standard library's ~2,000 documents (the benchmark's 20,000)."""
    roots = [stdlib_root()]
    purelib = Path(sysconfig.get_paths()["purelib"])
    if purelib != roots[0] and purelib.exists():
        roots.append(purelib)
    return roots


def _modules(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_PARTS.intersection(rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts:
            continue
        yield ".".join(parts), path


def _docstrings(tree: ast.Module) -> Iterator[tuple[str, str]]:
    doc = ast.get_docstring(tree)
    if doc:
        yield "", doc
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            doc = ast.get_docstring(node)
            if doc:
                yield node.name, doc
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                        doc = ast.get_docstring(sub)
                        if doc:
                            yield f"{node.name}.{sub.name}", doc


def stdlib_documents(limit: int | None = None, min_chars: int = 200) -> list[CorpusDoc]:
    """Documents from the standard library, then (if ``limit`` asks for more) installed packages."""
    docs: list[CorpusDoc] = []
    seen: set[str] = set()
    for root in corpus_roots():
        for module, path in _modules(root):
            if module in seen:
                continue
            seen.add(module)
            if _collect(docs, module, path, min_chars, limit):
                return docs
        if limit is None:
            break
    return docs


def _collect(docs: list[CorpusDoc], module: str, path: Path, min_chars: int, limit: int | None) -> bool:
    """Append the module's documents; True once ``limit`` is reached."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return False
    for qualname, doc in _docstrings(tree):
        # Postgres text cannot hold NUL bytes, and a few docstrings contain one.
        body = inspect.cleandoc(doc).replace("\x00", "")
        if len(body) < min_chars:
            continue
        name = f"{module}.{qualname}" if qualname else module
        if docs and any(d.id == f"py:{name}" for d in docs[-50:]):
            continue  # a name defined twice in one module (e.g. per-platform variants)
        docs.append(CorpusDoc(f"py:{name}", name, body, (module.split(".")[0],)))
        if limit is not None and len(docs) >= limit:
            return True
    return False


FEATURED = ("json", "csv", "sqlite3", "pathlib", "datetime", "logging", "re", "argparse", "subprocess", "zipfile")


def demo_documents(n: int) -> list[CorpusDoc]:
    """``n`` documents spread over the whole standard library (a stride sample, deterministic),
    always including the module documentation of a few well-known modules."""
    docs = stdlib_documents()
    featured = [d for d in docs if d.id in {f"py:{m}" for m in FEATURED}]
    rest = [d for d in docs if d not in featured]
    stride = max(1, len(rest) // max(1, n - len(featured)))
    picked = featured + rest[::stride]
    return picked[:n]
