#!/usr/bin/env bash
# Creates .venv and installs pgqd with the given extras, once per change of pyproject.toml.
# Sourced by the other scripts; safe to run again and again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-dev,embedded}"
venv="$root/.venv"
stamp="$venv/.pgqd-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1) $extras"

if [ ! -x "$venv/bin/python" ]; then
    echo "pgqd: creating virtualenv in $venv" >&2
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || ! grep -qxF -- "$want" "$stamp"; then
    echo "pgqd: installing pgqd[$extras] into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[$extras]"
    echo "$want" >"$stamp"
fi
