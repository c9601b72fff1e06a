"""Imports point one way: kernel <- model_bundle, phantom <- listener, worker <- onfh_dlr.cli.

Every product module's imports are read statically with :mod:`ast` (all of them: module
level, function-local and ``TYPE_CHECKING`` ones) and checked against the layering the
package docstrings state. The rules are written per top-level package (and the kernel's
``cli`` subpackage), so new subpackages of ``model_bundle/`` or ``worker/`` fall under them
without a change here. One dynamic check complements them: importing the listener process'
modules loads no model code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("onfh_dlr", "listener", "worker", "model_bundle", "phantom")


class Layer(Enum):
    """Where a module sits in the layering."""

    KERNEL = "onfh_dlr (kernel)"
    MODEL = "model_bundle"
    PHANTOM = "phantom"
    LISTENER = "listener"
    WORKER = "worker"
    CLI = "onfh_dlr.cli"
    THIRD_PARTY = "third-party or standard library"


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> Layer:
    """The layer of a dotted module name (``onfh_dlr.__main__`` runs the CLI)."""
    if _under(module, "onfh_dlr.cli") or module == "onfh_dlr.__main__":
        return Layer.CLI
    top = module.split(".")[0]
    return {
        "onfh_dlr": Layer.KERNEL,
        "model_bundle": Layer.MODEL,
        "phantom": Layer.PHANTOM,
        "listener": Layer.LISTENER,
        "worker": Layer.WORKER,
    }.get(top, Layer.THIRD_PARTY)


# Which project layers each layer may import (its own included).
ALLOWED: dict[Layer, frozenset[Layer]] = {
    Layer.KERNEL: frozenset({Layer.KERNEL}),
    Layer.MODEL: frozenset({Layer.MODEL, Layer.KERNEL}),
    Layer.PHANTOM: frozenset({Layer.PHANTOM, Layer.KERNEL}),
    Layer.LISTENER: frozenset({Layer.LISTENER, Layer.KERNEL}),
    Layer.WORKER: frozenset({Layer.WORKER, Layer.MODEL, Layer.KERNEL}),
    Layer.CLI: frozenset(Layer),
}
# The model core is a library the service wraps: of the kernel it uses only these.
MODEL_KERNEL_MODULES = ("onfh_dlr.errors", "onfh_dlr.pools")
# The listener process must start in about a second and stay small.
LISTENER_FORBIDDEN_LIBRARIES = ("torch", "torchvision", "SimpleITK", "radiomics", "highdicom")


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is written."""

    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.importer} imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> list[Path]:
    return sorted(p for package in PRODUCT_PACKAGES for p in (ROOT / package).rglob("*.py"))


def imports_of(path: Path) -> Iterator[Import]:
    """Every module ``path`` imports, relative imports resolved, ``from a import b`` as a.b
    when ``a.b`` is a module (else as ``a``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = _module_path(candidate) is not None
                yield Import(name, candidate if is_module else base, path, node.lineno)


def _module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


ALL_IMPORTS = [imp for path in product_modules() for imp in imports_of(path)]


def violations(imports: list[Import]) -> list[str]:
    """Each import that breaks a rule, with the rule it breaks."""
    found = []
    for imp in imports:
        source, target = layer_of(imp.importer), layer_of(imp.imported)
        if target is Layer.THIRD_PARTY:
            if source is Layer.LISTENER and imp.imported.split(".")[0] in (
                LISTENER_FORBIDDEN_LIBRARIES
            ):
                found.append(f"{imp} (the listener never loads model libraries)")
            continue
        if target not in ALLOWED[source]:
            found.append(f"{imp} ({source.value} may not import {target.value})")
        elif (
            source is Layer.MODEL
            and target is Layer.KERNEL
            and not any(_under(imp.imported, m) for m in MODEL_KERNEL_MODULES)
        ):
            found.append(f"{imp} (model_bundle uses only {', '.join(MODEL_KERNEL_MODULES)})")
    return found


def test_the_import_scan_sees_function_local_imports() -> None:
    # The demo imports the phantom inside a function; the scan must see it.
    demo = [i.imported for i in ALL_IMPORTS if i.importer == "onfh_dlr.cli.demo"]
    assert "phantom.cohort" in demo and "worker.sr_output" in demo
    assert len({i.importer for i in ALL_IMPORTS}) > 60  # every product module was read


def test_the_rules_catch_an_import_against_the_layering() -> None:
    here = ROOT / "listener" / "main.py"
    wrong = [
        Import("listener.main", "torch", here, 1),
        Import("listener.main", "model_bundle.serving", here, 2),
        Import("listener.main", "worker.scu", here, 3),
        Import("model_bundle.serving", "onfh_dlr.state", here, 4),
        Import("model_bundle.training", "worker.pipeline", here, 5),
        Import("onfh_dlr.state", "listener.spool", here, 6),
        Import("worker.jobs", "onfh_dlr.cli.root", here, 7),
        Import(
            "model_bundle.features.deep", "onfh_dlr", here, 8
        ),  # its __init__ loads the settings
    ]
    assert len(violations(wrong)) == len(wrong)
    right = [
        Import("worker.jobs", "model_bundle.serving", here, 1),
        Import("model_bundle.features.deep", "onfh_dlr.errors", here, 2),
        Import("onfh_dlr.cli.demo", "phantom.cohort", here, 3),
        Import("onfh_dlr.__main__", "onfh_dlr.cli", here, 4),
    ]
    assert violations(right) == []


@pytest.mark.parametrize("package", PRODUCT_PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    mine = [i for i in ALL_IMPORTS if _under(i.importer, package)]
    problems = violations(mine)
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_nothing_but_the_command_line_imports_the_command_line() -> None:
    importers = sorted(
        {
            str(i)
            for i in ALL_IMPORTS
            if layer_of(i.imported) is Layer.CLI and layer_of(i.importer) is not Layer.CLI
        }
    )
    assert importers == [], "\n".join(importers)


def test_the_listener_process_loads_no_model_code() -> None:
    code = (
        "import sys, listener.main, onfh_dlr.queue, onfh_dlr.state\n"
        "heavy = {'torch', 'highdicom', 'SimpleITK', 'radiomics', 'model_bundle', 'worker'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert run.stdout.strip() == "[]", f"importing listener.main loaded {run.stdout.strip()}"
