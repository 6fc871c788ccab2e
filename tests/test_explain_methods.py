"""The one registry of explanation methods (medmm.explain.methods) and everything derived from it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from medmm.explain import methods as em

ROOT = Path(__file__).resolve().parents[1]


def _choices(parser, command: str, option: str) -> tuple:
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_cli_choices_and_help_come_from_the_registry() -> None:
    from medmm.__main__ import build_parser

    parser = build_parser()
    assert _choices(parser, "explain", "--method") == em.METHODS == ("gradcam", "ig", "occlusion")
    assert _choices(parser, "explain", "--notes-method") == em.NOTES_METHODS
    sub = next(a for a in parser._actions if a.dest == "command").choices["explain"]
    method = next(a for a in sub._actions if "--method" in a.option_strings)
    assert method.default == em.DEFAULT_METHOD and all(m.name in method.help for m in em.REGISTRY)
    import subprocess

    code = "import sys, medmm.__main__; print('torch' in sys.modules)"   # the registry keeps the CLI torch-free
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip() == "False"


def test_explain_bench_and_saliency_check_use_the_registry() -> None:
    from medmm import explain
    from medmm.tools import bench

    assert explain.METHODS is em.METHODS and explain.METHOD_NAMES is em.METHOD_NAMES
    assert explain.NOTES_METHODS is em.NOTES_METHODS
    assert bench.EXPLAIN_METHODS is em.METHODS
    for m in em.REGISTRY:                     # every second method exists and differs from the first
        assert m.compare_with in em.BY_KEY and m.compare_with != m.key
    source = (ROOT / "medmm" / "explain" / "saliency_check.py").read_text()
    assert "BY_KEY[method].compare_with" in source and '"gradcam" if' not in source


def test_unknown_method_is_a_clear_error_naming_the_registry() -> None:
    import pytest

    from medmm.explain import ExplainError, explain

    with pytest.raises(ExplainError) as info:
        explain(None, None, None, method="lime")
    assert all(k in str(info.value) for k in em.METHODS)


def test_docs_table_is_the_registry() -> None:
    doc = (ROOT / "docs" / "explain.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- methods table:.*?-->\n(.*?)\n<!-- end of methods table -->", doc, re.S)
    assert table, "docs/explain.md lost its generated methods table"
    assert table.group(1) == em.methods_markdown()


def test_no_other_hard_coded_list_of_methods() -> None:
    pattern = re.compile(r"""["']gradcam["']\s*,\s*["']ig["']\s*,\s*["']occlusion["']""")
    offenders = [str(p.relative_to(ROOT)) for p in [*ROOT.glob("medmm/**/*.py"), *ROOT.glob("scripts/*.py"), ROOT / "app.py"]
                 if p != ROOT / "medmm" / "explain" / "methods.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
