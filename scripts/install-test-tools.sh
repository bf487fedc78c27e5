#!/usr/bin/env bash
# Debian tools some tests use to check real artefacts: promtool (metrics and alert rules), systemd-analyze
# (unit files), pgbouncer (producers through transaction pooling), Chromium (the web UI's browser tests,
# driven by Playwright; nothing downloads a browser) and nginx (the web UI behind a TLS reverse proxy), and for
# the fleet drills (hosts in network namespaces): ip (iproute2), iptables-legacy (iptables: partitions, packet
# loss, the queue that delays packets) and faketime (a host with a skewed clock). Needs root; services these
# packages ship are not started.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
[ -x /usr/sbin/nginx ] || need+=(nginx-light openssl)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v iptables-legacy >/dev/null 2>&1 || [ -x /usr/sbin/iptables-legacy ] || need+=(iptables)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "pgqd: not root, so not installing ${need[*]}; the tests that need them will say so" >&2
    exit 0
fi
echo "pgqd: installing ${need[*]} from the Debian archive" >&2
# Keep package scripts from starting the services they ship (a Prometheus server, for one).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if [ "$created_policy" = 1 ]; then
    rm -f "$policy"
fi
