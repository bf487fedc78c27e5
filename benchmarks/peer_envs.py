"""The peers compare.py measures pgqd against, each in its own virtualenv under benchmarks/.peers/.

They are comparators, not dependencies: installed on the first run of compare.py (pip, from the package
index), re-used while their requirements stay the same, and never imported by pgqd's own Python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parent / ".peers"

# psycopg[binary] is what psycopg's own install page starts with; without it procrastinate would run on the
# pure-Python libpq wrapper.
REQUIREMENTS = {
    "pgqueuer": ["pgqueuer[asyncpg]>=1.6,<1.7"],
    "procrastinate": ["procrastinate>=3.10,<3.11", "psycopg[binary]"],
}


def ensure_peer(name: str) -> Path:
    """The peer's virtualenv bin folder, created and filled first if needed."""
    venv = PEERS / name
    stamp = venv / ".requirements"
    wanted = "\n".join(REQUIREMENTS[name])
    if (venv / "bin" / "python").exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    print(f"compare: installing {' '.join(REQUIREMENTS[name])} into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *REQUIREMENTS[name]], check=True)
    stamp.write_text(wanted)
    return venv / "bin"


def installed_version(name: str, package: str) -> str:
    result = subprocess.run(
        [str(ensure_peer(name) / "python"), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()
