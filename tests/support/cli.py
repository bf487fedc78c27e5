"""Running the real ``pgqd`` command line in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PGQD = str(Path(sys.executable).with_name("pgqd"))


def run_pgqd(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([PGQD, *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False)
