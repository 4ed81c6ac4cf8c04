"""Dockerfile: pinned base images, every package the CLI and the workers import copied into the
runtime stage, and no torch (nor any other extra) needed there."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from tests.deploy.files import ROOT, compose, dockerfile_stages, is_pinned, regionsync_services

# Top-level modules of the extras (export, test, bench, peer, faults): not in the runtime image.
NOT_IN_THE_IMAGE = ("torch", "sentence_transformers", "transformers", "onnx", "langchain_core",
                    "langchain_classic", "langchain_milvus", "sqlalchemy", "hypothesis", "pytest")


def project_packages() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}


def copied_packages() -> set[str]:
    runtime = dockerfile_stages()[-1]
    return {src.rstrip("/") for src in runtime.copied if (ROOT / src).is_dir()}


def test_base_images_are_pinned() -> None:
    for stage in dockerfile_stages():
        assert is_pinned(stage.base), f"FROM {stage.base}: pin an exact version (or a digest)"


def test_the_runtime_stage_copies_every_package_of_the_project() -> None:
    assert project_packages() <= copied_packages(), f"not copied: {project_packages() - copied_packages()}"


def test_the_runtime_stage_copies_every_package_the_cli_imports() -> None:
    tree = ast.parse((ROOT / "cli" / "main.py").read_text())
    imported = {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    local = {name for name in imported if (ROOT / name / "__init__.py").exists()}
    assert local <= copied_packages(), f"the CLI imports {local - copied_packages()}, the image lacks them"


def test_every_module_compose_runs_is_in_the_image() -> None:
    for name, svc in regionsync_services(compose()).items():
        argv = svc.get("entrypoint") or []
        if argv[:2] == ["python", "-m"]:
            assert argv[2].split(".")[0] in copied_packages(), name


def test_the_runtime_stage_installs_no_extra() -> None:
    runtime = dockerfile_stages()[-1]
    for run in runtime.runs:
        assert "torch" not in run and "[" not in run, f"runtime stage installs an extra: RUN {run}"


def modules_compose_runs() -> set[str]:
    """Every module a regionsync service runs (python -m) or imports (python -c)."""
    found = set()
    for svc in regionsync_services(compose()).values():
        argv = svc.get("entrypoint") or []
        if argv[:2] == ["python", "-m"]:
            found.add(argv[2])
        elif argv[:2] == ["python", "-c"]:
            for node in ast.walk(ast.parse(argv[2])):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                elif isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
    return found


def test_the_cli_and_the_workers_import_without_any_extra() -> None:
    # In a fresh interpreter where the extras' modules cannot be imported, as in the image.
    modules = sorted(modules_compose_runs())
    assert {"streams.app", "indexer.worker", "dialog.process", "cli.replicator", "serve"} <= set(modules)
    code = f"""
import importlib, importlib.abc, importlib.util, sys
BLOCKED = {NOT_IN_THE_IMAGE!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(name + " is not in the runtime image")
        return None
sys.meta_path.insert(0, Block())
import cli.main
cli.main.build_parser()
for module in {modules!r}:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # "regionsync.settings.Settings": a name, not a module
        spec = None
    if spec is None:
        continue
    imported = importlib.import_module(module)
    if hasattr(imported, "__path__") and importlib.util.find_spec(module + ".__main__") is not None:
        importlib.import_module(module + ".__main__")  # python -m serve
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
