"""The bench's documents and the changes it makes to them in the CMS table.

Documents are real text that needs no download (:func:`bench.corpus.stdlib_documents`: the
docstrings of the standard library, then of the installed packages). The first ``docs`` are
loaded; later ones whose chunks are all new lend their bodies to changes, so a changed document
gets text the pipeline has never seen (nothing cached: it must be embedded, as a real edit would be).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg

from bench.corpus import CorpusDoc, stdlib_documents
from regionsync.settings import Settings
from streams.chunking import chunk_text

ROWS_PER_COMMIT = 500  # a bulk import / bulk edit commits in batches like this


@dataclass(frozen=True)
class Workload:
    docs: list[CorpusDoc]
    reserve: list[CorpusDoc]

    @classmethod
    def from_corpus(cls, docs: int, reserve: int, chunker: Callable[[str], list[str]]) -> Workload:
        """The first ``docs`` documents of the corpus, and ``reserve`` later ones whose chunks are
        all new: none appears among the loaded documents or another reserve document (the
        corpus repeats itself: vendored packages carry the same docstrings), so a change to a
        reserve body is new text to any embedding cache, ours or the peer's."""
        found = stdlib_documents(limit=docs + 3 * reserve)  # NUL bytes already dropped there
        if len(found) < docs + reserve:
            raise ValueError(f"the corpus on this machine has {len(found)} documents; {docs + reserve} wanted")
        seen = {text for d in found[:docs] for text in chunker(d.body)}
        spare: list[CorpusDoc] = []
        for doc in found[docs:]:
            chunks = chunker(doc.body)
            if chunks and not seen.intersection(chunks):
                spare.append(doc)
                seen.update(chunks)
                if len(spare) == reserve:
                    break
        return cls(found[:docs], spare)

    def ids(self) -> list[str]:
        return [d.id for d in self.docs]

    def reserve_bodies(self) -> Iterator[str]:
        """Endless supply of new text: reserve bodies, prefixed with a revision mark once they
        have all been used (so no text is ever repeated)."""
        round_ = 0
        while True:
            for doc in self.reserve:
                yield doc.body if round_ == 0 else f"Revision {round_}.\n\n{doc.body}"
            round_ += 1


def chunk_texts(settings: Settings, bodies: Sequence[str]) -> list[list[str]]:
    return [chunk_text(b, settings.chunk_size, settings.chunk_overlap) for b in bodies]


def _batches(items: Sequence[tuple], size: int) -> Iterator[Sequence[tuple]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_docs(settings: Settings, docs: Sequence[CorpusDoc], rows_per_commit: int = ROWS_PER_COMMIT) -> float:
    """Insert ``docs`` (published) in commits of ``rows_per_commit``; returns the wall time taken
    just before the first statement (the start of the measured interval)."""
    rows = [(d.id, d.title, d.body, list(d.tags)) for d in docs]
    return _write(settings, "INSERT INTO documents (id, title, body, tags, status) VALUES (%s, %s, %s, %s, 'published')",
                  rows, rows_per_commit)


def update_bodies(settings: Settings, changes: Sequence[tuple[str, str]], rows_per_commit: int = ROWS_PER_COMMIT) -> float:
    """``changes``: (doc id, new body). Returns the wall time before the first statement."""
    rows = [(body, doc_id) for doc_id, body in changes]
    return _write(settings, "UPDATE documents SET body = %s, updated_at = now() WHERE id = %s", rows, rows_per_commit)


def update_metadata(settings: Settings, doc_ids: Sequence[str], tag: str, rows_per_commit: int = ROWS_PER_COMMIT) -> float:
    """Title and tags change, the embedded text (body) does not."""
    rows = [(tag, doc_id) for doc_id in doc_ids]
    return _write(
        settings,
        "UPDATE documents SET title = title || ' (reviewed)', tags = array_append(tags, %s), updated_at = now() "
        "WHERE id = %s",
        rows,
        rows_per_commit,
    )


def delete_docs(settings: Settings, doc_ids: Sequence[str], rows_per_commit: int = ROWS_PER_COMMIT) -> float:
    rows = [(doc_id,) for doc_id in doc_ids]
    return _write(settings, "DELETE FROM documents WHERE id = %s", rows, rows_per_commit)


def _write(settings: Settings, sql: str, rows: Sequence[tuple], rows_per_commit: int) -> float:
    with psycopg.connect(settings.pg_dsn()) as conn:
        started = time.time()
        for part in _batches(rows, rows_per_commit):
            with conn.cursor() as cur:
                cur.executemany(sql, part)
            conn.commit()
    return started


def cache_rows(settings: Settings) -> int:
    """Rows in the shared embedding cache: grows by one per vector the model computed."""
    with psycopg.connect(settings.pg_dsn(settings.pg_state_database)) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM embedding_cache").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0
