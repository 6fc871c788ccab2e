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


def test_each_method_carries_its_attribute_and_dispatch_is_a_lookup() -> None:
    from medmm.explain import image

    assert all(callable(m.attribute) for m in em.REGISTRY)
    # no module of medmm.explain other than the registry branches on a method's name: adding a method is an entry
    branch = re.compile(r"""(method|key)\s*==\s*["'](gradcam|ig|occlusion)["']""")
    offenders = [p.name for p in (ROOT / "medmm" / "explain").glob("*.py") if p.name != "methods.py"
                 and branch.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert "BY_KEY" in (ROOT / "medmm" / "explain" / "image.py").read_text() and image.image_attribution


def test_explain_modules_use_each_others_public_names_and_only_files_writes() -> None:
    private = re.compile(r"from medmm\.explain\.\w+ import[^\n]*\b_\w|\bex\._")
    writes = re.compile(r"write_bytes|write_text|np\.save\(|open\(")
    sources = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "medmm" / "explain").glob("*.py")}
    assert [n for n, s in sources.items() if private.search(s)] == []
    assert [n for n, s in sources.items() if writes.search(s)] == ["files.py"]


def test_explain_options_are_one_dataclass_with_the_old_keywords() -> None:
    import dataclasses

    import pytest

    from medmm.explain import ExplainError, ExplainOptions, explain

    fields = {f.name for f in dataclasses.fields(ExplainOptions)}
    assert {"baseline", "n_steps", "notes_method", "occlusion_window", "occlusion_stride", "randomize_stages",
            "faithfulness_steps", "seed", "internal_batch_size"} == fields
    with pytest.raises(ExplainError, match="baseline"):          # keywords still reach the options
        explain(None, None, None, baseline="white")
    with pytest.raises(ExplainError, match="baseline"):
        explain(None, None, None, options=ExplainOptions(baseline="white"))
    with pytest.raises(TypeError):                                # an unknown keyword is refused, not ignored
        explain(None, None, None, n_stpes=8)
