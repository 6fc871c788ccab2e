"""The package layout's import rules (issue 12), on the source and in fresh interpreters.

1. Nothing in the library (``medmm/``) imports gradio: ``app.py``, outside it, is the one gradio module.
2. ``medmm.io`` and ``medmm.report`` (labeller, de-identification, bank, draft, consistency, DICOM SR) never
   import torch: not when imported, not when used, not through another medmm module, not inside a function.
3. The runtime never imports the benchmark / load tools (``medmm.tools``): only the CLI's ``bench`` command does,
   lazily.

The source checks follow every ``import`` at any depth (inside functions too) through medmm's own modules,
including the packages a module's import runs (``medmm.x.__init__``) and the lazy re-exports of ``models``,
``explain`` and ``training`` (their ``_EXPORTS``).
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medmm"
TORCH = ("torch", "torchvision", "timm", "captum", "transformers", "safetensors.torch")
TORCH_FREE = ("medmm.io", "medmm.report")
TOOLS = "medmm.tools"
CLI = "medmm.__main__"  # the one module allowed to import the tools (lazily, for `python -m medmm bench`)


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@lru_cache(maxsize=None)
def _lazy_exports(package: str) -> dict[str, str]:
    """``name -> submodule`` of a package that re-exports lazily (``medmm._lazy``); importing it is torch-free."""
    return dict(getattr(importlib.import_module(package), "_EXPORTS", {}))


@lru_cache(maxsize=None)
def _imports(module: str) -> frozenset[str]:
    """Every module ``module``'s source imports, at any depth: third-party names and medmm modules."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            for alias in node.names:
                found.add(f"{base}.{alias.name}")  # a submodule, or a name: only real modules are kept below
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value))
    out: set[str] = set()
    for name in found:
        if not _under(name, "medmm"):
            out.add(name)
            continue
        if name in MODULES:
            out.add(name)
        else:
            parent, _, attr = name.rpartition(".")
            is_package = parent in MODULES and MODULES[parent].name == "__init__.py"
            lazy = _lazy_exports(parent).get(attr) if is_package else None
            if lazy is not None:
                out.add(f"{parent}.{lazy}")
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for name in list(out):
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES)
    out.discard(module)
    return frozenset(out)


def _closure(module: str) -> dict[str, str]:
    """Every module reachable from ``module`` -> the medmm module that imports it (for the failure message)."""
    seen: dict[str, str] = {module: module}
    stack = [module]
    while stack:
        current = stack.pop()
        for name in _imports(current):
            if name not in seen:
                seen[name] = current
                if name in MODULES:
                    stack.append(name)
    return seen


def _chain(closure: dict[str, str], name: str) -> str:
    chain = [name]
    while closure[chain[-1]] != chain[-1]:
        chain.append(closure[chain[-1]])
    return " <- ".join(chain)


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_layout_is_what_the_rules_name() -> None:
    for package in ("medmm.io", "medmm.report", "medmm.models", "medmm.explain", "medmm.training", "medmm.serve",
                    TOOLS):
        assert (PACKAGE / Path(*package.split(".")[1:]) / "__init__.py").is_file(), package
    assert len([m for m in MODULES if _under(m, "medmm.report")]) > 3 and "medmm.io.dicom" in MODULES


def test_no_library_module_imports_gradio() -> None:
    offenders = {m: _chain(c, g) for m in MODULES for c in [_closure(m)] for g in c if _under(g, "gradio")}
    assert offenders == {}


def test_io_and_report_never_import_torch_in_the_source() -> None:
    offenders = {}
    for module in MODULES:
        if any(_under(module, p) for p in TORCH_FREE):
            closure = _closure(module)
            offenders.update({module: _chain(closure, t) for t in closure if any(_under(t, x) for x in TORCH)})
    assert offenders == {}


def test_the_runtime_never_imports_the_tools() -> None:
    runtime = [m for m in MODULES if m != CLI and not _under(m, TOOLS)]
    offenders = {m: _chain(c, t) for m in runtime for c in [_closure(m)] for t in c if _under(t, TOOLS)}
    assert offenders == {}
    assert any(_under(t, TOOLS) for t in _imports(CLI)), "the CLI's bench command lost its import of medmm.tools"


def test_importing_every_module_leaves_gradio_out() -> None:
    code = f"""
import importlib, json, sys
bad = []
for name in {sorted(MODULES)!r}:
    importlib.import_module(name)
    if "gradio" in sys.modules and not bad:
        bad.append(name)
print(json.dumps({{"first_gradio": bad, "imported": len({sorted(MODULES)!r})}}))
"""
    out = _run(code)
    assert out["first_gradio"] == [] and out["imported"] == len(MODULES)


def test_io_and_report_import_and_run_without_torch(tmp_path: Path) -> None:
    modules = sorted(m for m in MODULES if any(_under(m, p) for p in TORCH_FREE))
    code = f"""
import importlib, io, json, sys
for name in {modules!r}:
    importlib.import_module(name)
from medmm.io import load_scan, load_scans
from medmm.prediction import Prediction
from medmm.report import check_consistency, draft_report, label_text, scrub_identifiers, to_dicom_sr
scans = [load_scan("assets/examples/01_child_normal.jpeg"), *load_scans(["assets/examples/04_adult_dicom_dx.dcm"])]
findings = {{"Pneumonia": 0.8, "No Finding": 0.1}}
pred = Prediction(findings=findings, thresholds={{k: 0.5 for k in findings}}, positive=("Pneumonia",),
                  modalities=("image", "notes"), notes_embedding=None, image_embedding=None, ood_score=None,
                  ood_threshold=None, warnings=(), scan_metadata=(), checkpoint={{}})
report = draft_report(pred, "Fever and cough for 3 days, seen by Dr Smith.")
to_dicom_sr(report, pred, io.BytesIO())
check_consistency(report.to_text(), pred)
label_text(scrub_identifiers(report.to_text()))
print(json.dumps(sorted(m for m in sys.modules if any(m == t or m.startswith(t + ".") for t in {TORCH!r}))))
"""
    assert _run(code) == []
