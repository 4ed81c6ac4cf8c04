"""Is an argv a real command of this project? The CLI's parser, a module's own argparse (run up
to the parsing, nothing further), or ``python -c`` code that compiles and names real modules,
functions (called with arguments they accept) and settings. Failures are pytest failures that
name the compose service."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
from typing import Any

import pytest

from cli.main import build_parser
from regionsync.settings import Settings


def check_cli(name: str, args: list[str]) -> None:
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{name}: `regionsync {' '.join(args)}` is not a command of the CLI ({exc})")
    assert callable(getattr(parsed, "func", None)), name


class _Parsed(Exception):
    pass


def check_module(name: str, module: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The module runs (``__main__``) and its own argparse accepts ``args``; nothing past the
    parsing runs."""
    mod = importlib.import_module(module)
    if hasattr(mod, "__path__"):
        mod = importlib.import_module(f"{module}.__main__")
    main = getattr(mod, "main", None)
    assert callable(main), f"{name}: python -m {module} has no main()"
    if "ArgumentParser" not in inspect.getsource(inspect.getmodule(main) or mod):
        # No parser of its own (streams.app hands its argv to Faust): nothing may be passed.
        assert args == [], f"{name}: python -m {module} takes no arguments"
        return
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, argv: Any = None, namespace: Any = None) -> Any:
        try:
            original(self, argv, namespace)
        except SystemExit as exc:
            pytest.fail(f"{name}: python -m {module} {' '.join(args)}: refused by its parser ({exc})")
        raise _Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(_Parsed):
            main(args)


def check_python(name: str, code: str) -> None:
    """``python -c``: compiles, every module and name it imports exists, every function it calls
    through an imported name exists and accepts the arguments, every attribute it reads on a
    Settings object is one."""
    tree = ast.parse(code, filename=f"<{name}>")
    bound: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = importlib.import_module(alias.name.split(".")[0])
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")
                bound[alias.asname or alias.name] = getattr(module, alias.name)
    settings_names = {
        target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Name) and _returns_settings(node.value, bound)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in settings_names:
                assert hasattr(Settings, node.attr) or node.attr in Settings.model_fields, \
                    f"{name}: settings have no {node.attr}"
        if isinstance(node, ast.Call):
            func = _resolve(node.func, bound)
            if func is None or any(isinstance(a, ast.Starred) for a in node.args) or \
                    any(k.arg is None for k in node.keywords):
                continue
            try:
                signature = inspect.signature(func)
            except (TypeError, ValueError):
                continue
            try:
                signature.bind(*node.args, **{k.arg: k.value for k in node.keywords if k.arg})
            except TypeError as exc:
                pytest.fail(f"{name}: {ast.unparse(node.func)}(...) does not take these arguments: {exc}")


def _resolve(expr: ast.expr, bound: dict[str, Any]) -> Any:
    """The object an ``a.b.c`` expression names when ``a`` is an imported name (else None);
    a missing attribute fails the test."""
    if isinstance(expr, ast.Name):
        return bound.get(expr.id)
    if isinstance(expr, ast.Attribute):
        owner = _resolve(expr.value, bound)
        if owner is None:
            return None
        assert hasattr(owner, expr.attr), f"{ast.unparse(expr.value)} has no {expr.attr}"
        return getattr(owner, expr.attr)
    return None


def _returns_settings(value: ast.expr, bound: dict[str, Any]) -> bool:
    if not isinstance(value, ast.Call):
        return False
    if _resolve(value.func, bound) is Settings:
        return True
    # settings.source(), settings.for_region(r): methods of Settings that return Settings
    func = value.func
    return isinstance(func, ast.Attribute) and func.attr in ("source", "for_region")
