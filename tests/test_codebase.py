"""One place per concept (issue 12): checks over the source text that a duplicate would break."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*ROOT.glob("medmm/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("tests/e2e/*.py"),
           ROOT / "app.py"]
THIS = Path(__file__).resolve()
_NOT_LIBRARY = {str(p.relative_to(ROOT)) for p in SOURCES if p.relative_to(ROOT).parts[0] != "medmm"}
_TESTS = {str(p.relative_to(ROOT)) for p in SOURCES if p.relative_to(ROOT).parts[0] == "tests"}


def _offenders(pattern: str, allowed: set[str] = frozenset()) -> list[str]:
    rx = re.compile(pattern)
    return sorted(str(p.relative_to(ROOT)) for p in SOURCES
                  if p.resolve() != THIS and str(p.relative_to(ROOT)) not in allowed
                  and rx.search(p.read_text(encoding="utf-8")))


def test_scripts_and_tests_import_the_installed_package() -> None:
    assert _offenders(r"sys\.path\.(insert|append)\(") == []


def test_the_shared_data_path_is_built_once() -> None:
    # medmm.training.data.SHARED_DATA (honours MEDMM_SHARED_DATA); everything else imports it
    assert _offenders(r"""/\s*["']shared["']\s*/\s*["']data["']""", {"medmm/training/data.py"}) == []


def test_one_disclaimer_wording() -> None:
    import medmm
    from medmm import report, service
    from medmm.serve import presenters

    assert report.DISCLAIMER is presenters.DISCLAIMER is medmm.DISCLAIMER
    assert "not a diagnosis" in medmm.DISCLAIMER and "qualified clinician" in medmm.DISCLAIMER
    assert '"disclaimer": DISCLAIMER' in (ROOT / "medmm" / "service.py").read_text()
    assert service.DISCLAIMER is medmm.DISCLAIMER
    # no other module spells out a disclaimer of its own
    assert _offenders(r"DISCLAIMER\s*=\s*\(", {"medmm/__init__.py"}) == []


def test_assertion_status_precedence_is_defined_once() -> None:
    # medmm.report.labeler.STATUS_RANK / strongest_statuses: the labeller, the sentence bank and the consistency
    # check aggregate a sentence's mentions the same way
    assert _offenders(r"""["']positive["']\s*:\s*3""", {"medmm/report/labeler.py"}) == []


def test_view_pooling_is_defined_once() -> None:
    # medmm.models.model.view_features / pool_views: the model, the ONNX runtimes, the batching worker and the
    # explanations pool a request's views the same way
    assert _offenders(r"\.view\(b, v, -1\)", {"medmm/models/model.py"}) == []


def test_tests_start_the_app_in_one_place() -> None:
    # tests/helpers.running_app: the API, server and browser tests share one way to start `python app.py`.
    # scripts/cold_start.py starts it its own way on purpose: it times the start itself (first page, model loaded)
    # at 20 ms resolution, which the helper's 0.5 s wait does not give
    assert _offenders(r"Popen\(\[sys\.executable, \"app\.py\"\]",
                      {"tests/helpers.py", "scripts/cold_start.py"}) == []


def test_radiograph_modalities_are_defined_once() -> None:
    # medmm.io.RADIOGRAPH_MODALITIES: the DICOM loader's note and the pipeline's warning use the same set
    assert _offenders(r"""["']CR["'],\s*["']DX["']""", {"medmm/io/dicom.py"}) == []


# Modules over 500 lines and functions over 80 lines (issue 26), each with why it is still so. A new one fails;
# splitting one means deleting its line here. Sizes are upper bounds: growing one past its bound fails too.
# Empty since the splits of issue 26 (training, bench, DICOM, energy, de-identification, explanations, serve, notes).
LONG_MODULES: dict[str, tuple[int, str]] = {}
LONG_FUNCTIONS: dict[tuple[str, str], tuple[int, str]] = {}


def test_long_modules_and_functions_are_listed_with_a_reason() -> None:
    import ast

    modules, functions = {}, {}
    for path in ROOT.glob("medmm/**/*.py"):
        name = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 500:
            modules[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                functions[(name, node.name)] = node.end_lineno - node.lineno + 1
    assert set(modules) <= set(LONG_MODULES), sorted(set(modules) - set(LONG_MODULES))
    assert set(functions) <= set(LONG_FUNCTIONS), sorted(set(functions) - set(LONG_FUNCTIONS))
    assert all(n <= LONG_MODULES[m][0] for m, n in modules.items()), modules
    assert all(n <= LONG_FUNCTIONS[f][0] for f, n in functions.items()), functions


def test_what_each_data_source_is_is_defined_once() -> None:
    # medmm.sources.SOURCES: sites, populations, images, the screen's line; training and the app read it
    assert _offenders(r"""["']nih["'],\s*["']nih_sample["']|["']nih_sample["']\s*:\s*["']nih["']""",
                      {"medmm/sources.py"} | _NOT_LIBRARY) == []
    assert _offenders(r"""["']kermany["']\s*:\s*["']pediatric""", {"medmm/sources.py"}) == []


def test_the_finding_hierarchy_is_defined_once() -> None:
    # medmm.labels (FINDINGS_TABLE, descendants): the pneumonia family is derived from it everywhere
    assert _offenders(r"""["']Bacterial pneumonia["'],\s*["']Viral pneumonia["']""", {"medmm/labels.py"} | _NOT_LIBRARY) == []


def test_control_characters_are_cleaned_by_one_rule() -> None:
    # medmm.text.strip_controls; the notes and the de-identifier import it
    assert _offenders(r"unicodedata\.category\(|\[\\x00-\\x1[fF]", {"medmm/text.py"} | _TESTS) == []
