"""A PostgreSQL server per region, with ``wal_level=logical`` (the CMS database Debezium captures
lives in the source region's).

Each region's server holds that region's own database (dialog state store, role and fence, the
replicators' checkpoints: regionsync/pgdb.py); the source region's also the CMS database and the
embedding cache. Data in ``STATE/pg/<region>``. The server binaries refuse to run as root, so as
root we run them as user ``postgres``.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from regionsync.errors import StackError
from regionsync.pgdb import grant_link_role
from regionsync.settings import Settings
from stack import procs

log = logging.getLogger(__name__)

PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"), Path("/usr/lib/postgresql/17/bin")]

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS documents (
    id          text PRIMARY KEY,
    title       text NOT NULL,
    body        text NOT NULL,
    tags        text[],
    status      text NOT NULL DEFAULT 'published',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Debezium needs the full old row: without it an update has before=null, a delete's before
-- holds only the key, and unchanged TOASTed columns arrive as a placeholder.
ALTER TABLE documents REPLICA IDENTITY FULL;
"""


def pg_bin(tool: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        if (directory / tool).exists():
            return str(directory / tool)
    found = shutil.which(tool)
    if found:
        return found
    raise StackError(f"PostgreSQL server tool {tool!r} not found; run scripts/setup.sh (installs postgresql)")


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def proc_name(region: str) -> str:
    """The name faults and `stack status` give a region's server (it runs under pg_ctl, no pid file of ours)."""
    return f"postgres-{region}"


def data_dir(settings: Settings, region: str) -> Path:
    return settings.state_dir / "pg" / region


def _install_certificate(settings: Settings, ddir: Path) -> None:
    """The local CA's server certificate as the server's (``server.crt``/``server.key`` in the data
    dir, owned by the server's user, the key 0600: Postgres refuses a key others can read), and the
    CA as the one client certificates must chain to (``root.crt``)."""
    from serve.tls import tls_files
    from stack import pki

    pki.ensure(settings, clients=("mirror",))
    files = tls_files(settings)
    for source, name in ((files.cert, "server.crt"), (files.key, "server.key"), (files.ca, "root.crt")):
        target = ddir / name
        target.write_bytes(source.read_bytes())
        os.chmod(target, 0o600)
    _chown_for_postgres(ddir)


_LINK_MARK = "# regionsync: the link role"


def link_hba_lines(settings: Settings) -> tuple[list[str], list[str]]:
    """pg_hba.conf lines (put first) and pg_ident.conf lines that let the other regions in as the
    read-only link role only with a client certificate of the stack's CA (CN ``mirror``), and never
    without TLS."""
    user = settings.link_pg_user
    hba = [f"{_LINK_MARK} (other regions): a client certificate, nothing else (stack/postgres.py)",
           f"hostssl all {user} 0.0.0.0/0 cert map=regionsync_links",
           f"hostssl all {user} ::/0 cert map=regionsync_links",
           f"host all {user} all reject", f"local all {user} reject"]
    return hba, [f"regionsync_links mirror {user}"]


def _install_link_rules(settings: Settings, ddir: Path) -> None:
    hba_path, ident_path = ddir / "pg_hba.conf", ddir / "pg_ident.conf"
    hba = hba_path.read_text()
    if _LINK_MARK in hba:
        return
    lines, ident = link_hba_lines(settings)
    hba_path.write_text("\n".join(lines) + "\n" + hba)
    ident_path.write_text(ident_path.read_text() + "\n" + "\n".join(ident) + "\n")
    _chown_for_postgres(ddir)


def _chown_for_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


# Postgres refuses to start on a data directory whose mode is anything but these ("has invalid
# permissions"), so the data dir itself is never opened up: only its parents are.
_DATA_DIR_MODES = (0o700, 0o750)


def _ensure_traversable(path: Path) -> None:
    """The postgres user must be able to reach ``path`` through every parent directory: o+x on
    ``path`` and each parent. Never call it on the data directory (see _DATA_DIR_MODES)."""
    if os.geteuid() != 0:
        return
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def is_running(settings: Settings, region: str) -> bool:
    try:
        with psycopg.connect(settings.for_region(region).pg_dsn("postgres"), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def postmaster_pid(settings: Settings, region: str) -> int | None:
    """The postmaster's pid if it runs."""
    try:
        found = int((data_dir(settings, region) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return found if procs.pid_alive(found) else None


def start(settings: Settings, region: str) -> None:
    """initdb on first use, start the region's server, create the role, databases and (in the
    source region) the CMS schema."""
    ddir = data_dir(settings, region)
    settings = settings.for_region(region)
    ddir.parent.mkdir(parents=True, exist_ok=True)
    _ensure_traversable(ddir.parent)
    if not (ddir / "PG_VERSION").exists():
        ddir.mkdir(parents=True, exist_ok=True)
        _chown_for_postgres(ddir)
        pwfile = ddir.parent / ".pgpass-init"
        pwfile.write_text(settings.pg_password.get_secret_value() + "\n")
        os.chmod(pwfile, 0o644)
        try:
            _run(
                [
                    pg_bin("initdb"), "-D", str(ddir), "-U", settings.pg_user, "--pwfile", str(pwfile),
                    "-A", "scram-sha-256", "-E", "UTF8", "--no-instructions",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
    _repair_data_dir_mode(ddir)
    if not is_running(settings, region):
        # fsync=off: a throwaway server; an OS crash may cost it, a process crash does not.
        # synchronous_commit stays on (the default): with it off, a commit's WAL reaches the
        # walsender only at the WAL writer's next round (wal_writer_delay, 200 ms), which Debezium
        # saw as ~180 ms of freshness at p50; and an acknowledged commit could vanish on a server
        # crash, which a drill that counts committed versions must not see.
        opts = (
            f"-p {settings.pg_port} -c wal_level=logical -c listen_addresses=127.0.0.1 -k {ddir} "
            "-c max_replication_slots=10 -c max_wal_senders=10 -c fsync=off -c full_page_writes=off"
        )
        if settings.tls or settings.link_tls:
            _install_certificate(settings, ddir)
            # server.crt and server.key in the data dir: Postgres' defaults; root.crt: the CA a
            # client certificate must chain to (the other regions' link role).
            opts += " -c ssl=on -c ssl_ca_file=root.crt"
        if settings.link_tls:
            _install_link_rules(settings, ddir)
        clear_stale_lock(ddir)
        try:
            _run(
                [pg_bin("pg_ctl"), "-D", str(ddir), "-w", "-t", "60", "-l", str(ddir / "server.log"), "-o", opts,
                 "start"],
                "pg_ctl start",
            )
        except StackError as exc:
            raise StackError(f"{exc}\nlast lines of {ddir / 'server.log'}:\n{_tail(ddir / 'server.log')}") from exc
    ensure_databases(settings, region)


def clear_stale_lock(ddir: Path, timeout: float = 30.0, poll_s: float = 0.2) -> bool:
    """Remove the ``postmaster.pid`` a killed server left behind when it is safe; True if removed.

    Postgres removes a stale lock file itself when its PID is gone, but refuses to start while that
    PID answers ``kill(pid, 0)``: a zombie nobody has reaped yet, or the number reused by another
    program. Seen in the fault suite on a loaded machine: the SIGKILLed postmaster (re-parented to
    PID 1 when pg_ctl exited) was still a zombie when the restart came, and every start failed
    with "lock file already exists". The files are removed only once its postmaster is not a running
    postgres and no process is attached to its shared memory any more: a backend orphaned by the
    kill and still running is what the lock protects the data from, so that is waited for.
    """
    lock = ddir / "postmaster.pid"
    try:
        lines = lock.read_text().splitlines()
    except OSError:
        return False
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return False
    if _is_postgres(pid):
        return False  # a live server: pg_ctl start says so
    shmid = _lock_shmid(lines)
    deadline = time.monotonic() + timeout
    while (attached := _shm_attached(shmid)) > 0:
        if time.monotonic() > deadline:
            raise StackError(
                f"postgres in {ddir} was killed but {attached} of its processes are still attached to its "
                f"shared memory (segment {shmid}) after {timeout:.0f}s; stop them before starting it again"
            )
        time.sleep(poll_s)
    # The socket's lock file (the data dir is the socket dir here, `-k`) names the same
    # postmaster and is checked the same way: "lock file .s.PGSQL.<port>.lock already exists".
    for socket_lock in ddir.glob(".s.PGSQL.*.lock"):
        try:
            owner = int(socket_lock.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue
        if not _is_postgres(owner):
            socket_lock.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
    log.info("postgres: removed the lock files of a server that is gone (pid %d)", pid)
    return True


def _is_postgres(pid: int) -> bool:
    """A running (not zombie) process of a Postgres server."""
    return procs.pid_alive(pid) and "postgres" in _cmdline(pid)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _lock_shmid(lines: list[str]) -> int | None:
    # postmaster.pid, line 7: "<shared memory key> <shared memory id>" (miscadmin.h, LOCK_FILE_LINE_SHMEM_KEY).
    try:
        return int(lines[6].split()[1])
    except (IndexError, ValueError):
        return None


def _shm_attached(shmid: int | None) -> int:
    """Processes attached to System V shared memory segment ``shmid`` (0 if it is gone)."""
    if shmid is None:
        return 0
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()
    except OSError:
        return 0
    for row in rows[1:]:
        cols = row.split()
        if len(cols) > 6 and cols[1] == str(shmid):
            return int(cols[6])
    return 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _repair_data_dir_mode(ddir: Path) -> None:
    # Earlier versions of stop() added o+x to the data dir itself, which makes every later start
    # fail; put a directory left that way back to 0700 instead of asking the user to chmod it.
    try:
        mode = ddir.stat().st_mode & 0o777
    except OSError:
        return
    if mode not in _DATA_DIR_MODES:
        log.info("postgres data dir %s had mode %o; restoring 0700", ddir, mode)
        os.chmod(ddir, 0o700)


def ensure_databases(settings: Settings, region: str) -> None:
    """The region's own database; in the source region also the CMS database (with its table)
    and regionsync's (the embedding cache)."""
    local = settings.for_region(region)
    wanted = [settings.dialog_database(region)]
    if region == settings.source_region:
        wanted += [settings.pg_database, settings.pg_state_database]
    with psycopg.connect(local.pg_dsn("postgres"), autocommit=True) as conn:
        for db in wanted:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{db}"')
    if settings.link_tls:  # the other regions read this region's database as the link role
        grant_link_role(local.postgres(), settings.dialog_database(region), settings.link_pg_user)
    if region == settings.source_region:
        with psycopg.connect(local.pg_dsn(), autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)


def stop(settings: Settings, region: str, timeout: float = 30.0) -> None:
    ddir = data_dir(settings, region)
    pid_file = ddir / "postmaster.pid"
    if not pid_file.exists():
        return
    # pg_ctl runs as the postgres user: it must reach the data dir through its parents.
    _ensure_traversable(ddir.parent)
    try:
        _run([pg_bin("pg_ctl"), "-D", str(ddir), "-m", "fast", "-w", "stop"], "pg_ctl stop")
        return
    except StackError as exc:
        log.warning("%s; signalling the postmaster directly", exc)
    # pg_ctl runs as the postgres user and fails if it cannot reach the data dir (e.g. another
    # pytest session made /tmp/pytest-of-root private again): SIGINT is Postgres' "fast" shutdown.
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(_as_postgres(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
