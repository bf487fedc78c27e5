#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests.
#   scripts/ensure-postgres.sh          start the local Debian cluster if it is installed but down
#   scripts/ensure-postgres.sh --install  also apt-get install PostgreSQL when it is missing (CI, as root)
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if [ -n "${PGQD_TEST_DSN:-}" ]; then
    exit 0
fi
if command -v pg_isready >/dev/null 2>&1 && ready; then
    exit 0
fi

installed_here=0
if [ ! -d /etc/postgresql ] || [ -z "$(ls -A /etc/postgresql 2>/dev/null)" ]; then
    if [ "${1:-}" != "--install" ]; then
        echo "pgqd: no local PostgreSQL cluster; the tests will look for PGQD_TEST_DSN or 127.0.0.1:5432" >&2
        exit 0
    fi
    echo "pgqd: installing PostgreSQL from the Debian archive" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    installed_here=1
fi

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
if [ "$installed_here" = 1 ]; then
    # A fresh Debian cluster asks for passwords over TCP; the test suite connects as postgres on loopback.
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
fi

if ! ready; then
    echo "pgqd: starting the local PostgreSQL $version cluster" >&2
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
fi
for _ in $(seq 1 60); do
    if ready; then
        exit 0
    fi
    sleep 0.5
done
echo "pgqd: PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
