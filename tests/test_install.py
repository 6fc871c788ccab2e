"""An installed medmm carries its model: build the wheel, install it into a fresh venv, predict from another folder.

The fresh venv gets the project's dependencies through a ``.pth`` line pointing at this interpreter's site-packages
(a ``.pth`` inside a path added that way is not run, so the checkout's editable install does not leak in): what is
tested is the wheel's own content, offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.helpers import ROOT


def _copy_of_the_checkout(dest: Path) -> Path:
    """The files git would ship (tracked and new, not ignored), copied: building writes build/ and *.egg-info next
    to the sources, and the checkout must stay clean."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_pip_installed_medmm_predicts_from_any_folder_with_its_shipped_checkpoint(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    source = _copy_of_the_checkout(tmp_path / "source")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("medmm-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MEDMM_CHECKPOINT", "PYTHONPATH")}
    where = subprocess.run([str(python), "-c", "import medmm, medmm.models.checkpoint as c; "
                            "print(medmm.__file__); print(c.DEFAULT_CHECKPOINT)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    module, checkpoint = where.stdout.split()
    assert str(venv) in module and not module.startswith(str(ROOT))         # the wheel's medmm, not the checkout's
    assert checkpoint.startswith(str(venv)) and "share/medmm/checkpoints/default" in checkpoint
    shipped = sorted(p.name for p in (ROOT / "checkpoints" / "default").iterdir())
    assert sorted(p.name for p in Path(checkpoint).iterdir()) == shipped   # every file of the checkpoint

    image = ROOT / "assets" / "examples" / "02_child_bacterial_pneumonia.jpeg"
    done = subprocess.run([str(venv / "bin" / "medmm"), "predict", str(image), "--json"], capture_output=True,
                          text=True, cwd=elsewhere, env={**env, "MEDMM_RUNTIME": "torch"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["status"] == "ok" and "Pneumonia" in out["positive"] and out["population"] == "child"
    assert out["checkpoint"]["trained"] is True
    assert not any(elsewhere.iterdir())   # nothing written into the folder it ran from
