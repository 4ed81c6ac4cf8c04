#!/usr/bin/env python3
"""Which third-party packages does the runtime code import that its runtime dependencies do not bring?

Run it with the project's own interpreter from the project's root (scripts/test.sh does, so CI
fails on such an import):

    .venv/bin/python scripts/check_runtime_deps.py [PACKAGE_DIR ...]

A copy of the team's shared tool (shared/tools/check_runtime_deps.py), kept in the repository so
that CI on a clean clone runs the same check.

It reads `[project].dependencies` of pyproject.toml, follows their requirements (extras left out),
collects every `import` in the runtime packages (tests excluded; imports inside functions
included), maps each to the distribution that provides it in this environment, and prints those
that the runtime closure lacks. Exit 1 when it finds any. A package that only the test extra
installs, imported by code the demo runs, breaks the README's first command on a fresh machine.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:  # pip vendors it
    from pip._vendor.packaging.markers import default_environment  # type: ignore
    from pip._vendor.packaging.requirements import Requirement  # type: ignore


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def closure(requirements: list[str]) -> set[str]:
    env = default_environment()
    seen: set[str] = set()
    todo = []
    for text in requirements:
        req = Requirement(text)
        todo.append((req, set(req.extras)))
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            continue
        key = norm(req.name)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        for sub in dist.requires or []:
            sreq = Requirement(sub)
            if sreq.marker and not any(sreq.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                continue
            todo.append((sreq, set(sreq.extras)))
    return seen


def imports(paths: list[Path]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for root in paths:
        for file in root.rglob("*.py"):
            if "tests" in file.parts:
                continue
            try:
                tree = ast.parse(file.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                names = []
                if isinstance(node, (ast.List, ast.Tuple)):  # [sys.executable, "-m", "moto.server", ...]
                    items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
                    python = [isinstance(e, ast.Attribute) and e.attr == "executable"
                              or isinstance(e, ast.Constant) and "python" in str(e.value) for e in node.elts]
                    names = [items[i + 1] for i in range(len(items) - 1)
                             if items[i] == "-m" and isinstance(items[i + 1], str) and any(python[:i])]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(file))
    return found


def main() -> int:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    dirs = [Path(p) for p in sys.argv[1:]] or [
        p for p in Path(".").iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name != "tests"
    ]
    own = {p.name for p in dirs} | {p.name for p in Path(".").iterdir() if (p / "__init__.py").exists()}
    have = closure(project.get("dependencies", []))
    name = project.get("name", "")
    optional = {
        extra: closure([r for r in reqs if norm(Requirement(r).name) != norm(name)])
        for extra, reqs in project.get("optional-dependencies", {}).items()
        if extra != "test"
    }
    providers = metadata.packages_distributions()
    missing: dict[str, set[str]] = {}
    for mod, files in sorted(imports(dirs).items()):
        if mod in own or mod in sys.stdlib_module_names or mod == "__future__":
            continue
        dists = {norm(d) for d in providers.get(mod, [])}
        if dists & have:
            continue
        extras = sorted(e for e, c in optional.items() if dists & c)
        if extras:  # an optional feature: fine, if the code says which extra to install
            print(f"note: {mod} comes only with the extra [{', '.join(extras)}]: " + ", ".join(sorted(files)[:4]))
            continue
        what = f"{mod} (not installed here at all)" if not dists else f"{mod} (from {', '.join(sorted(dists))})"
        missing[what] = files
    for what, files in missing.items():
        print(f"runtime code uses {what}, which the runtime dependencies do not bring: "
              + ", ".join(sorted(files)[:4]))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
