"""Independent checks of DICOM objects with dicom3tools' dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of ``dciodvfy``'s report on ``path`` that start with "Error".

    dciodvfy is a required test tool (``make system-deps`` installs it): a missing one
    fails the test rather than skipping a check that CI relies on.
    """
    exe = shutil.which("dciodvfy")
    if exe is None:
        raise RuntimeError(
            "dciodvfy (Debian package dicom3tools) is required: run `make system-deps`"
        )
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("Error")]
