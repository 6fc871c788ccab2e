"""This run's private cache folder for gradio (uploads, exports, everything it caches), removed at exit.

``prepare_cache`` must run before gradio is imported (gradio reads ``GRADIO_TEMP_DIR`` then): stdlib only here.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import stat
from pathlib import Path

_RUN_PREFIX = "run-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_cache(root: str | os.PathLike[str]) -> Path:
    """Create this run's private cache folder, set ``GRADIO_TEMP_DIR`` to it, remove dead runs' folders."""
    parent = Path(os.environ.get("MEDMM_CACHE_DIR") or Path(root) / ".cache" / "gradio")
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(f"{_RUN_PREFIX}*"):
        m = re.fullmatch(rf"{_RUN_PREFIX}(\d+)-\w+", old.name)
        if m and old.is_dir() and not (_alive(int(m.group(1))) and int(m.group(1)) != os.getpid()):
            shutil.rmtree(old, ignore_errors=True)
    run = parent / f"{_RUN_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
    run.mkdir(mode=0o700)
    os.chmod(run, stat.S_IRWXU)
    os.environ["GRADIO_TEMP_DIR"] = str(run)
    atexit.register(shutil.rmtree, run, True)
    return run


def install_cleanup(run_dir: Path) -> None:
    """Make SIGTERM stop the server the way Ctrl-C does, so that ``run_dir`` is removed at exit as well."""
    atexit.register(shutil.rmtree, run_dir, True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # -> KeyboardInterrupt in the main thread
