"""A loopback port whose incoming packets the kernel drops: a link to the database gone dead, silently.

Unlike ``TcpProxy.freeze`` (whose sockets stay open and acknowledge what the client sends), nothing acknowledges
the client's packets, so its own TCP timers (``tcp_user_timeout``, keepalives) see the link die, as they would
when a database host vanishes. One iptables rule on ``lo`` for one port; needs root and ``iptables-legacy``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

from tests.support.netns import IPTABLES


def why_packets_cannot_be_dropped() -> str | None:
    if os.geteuid() != 0:
        return "dropping packets needs root"
    if shutil.which(IPTABLES) is None:
        return f"dropping packets needs {IPTABLES}"
    listed = subprocess.run([IPTABLES, "-w", "-L", "INPUT", "-n"], capture_output=True, text=True, timeout=30)
    if listed.returncode != 0:  # root without the right to change the firewall (a container without NET_ADMIN)
        return f"{IPTABLES} cannot be used here: {listed.stderr.strip()}"
    return None


@contextlib.contextmanager
def packets_dropped(port: int) -> Iterator[None]:
    """Every packet sent to loopback ``port`` is dropped while the block runs."""
    # Named, so that a rule left by a test killed midway is recognised as a test's.
    tag = ["-m", "comment", "--comment", "pgqd-tests"]
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), *tag, "-j", "DROP"]
    subprocess.run([IPTABLES, "-w", "-I", *rule], check=True, timeout=30)
    try:
        yield
    finally:
        # Not check=True: a failure here must not hide the test's own error.
        removed = subprocess.run([IPTABLES, "-w", "-D", *rule], capture_output=True, text=True, timeout=30)
        if removed.returncode != 0:
            print(f"could not remove the rule dropping port {port}: {removed.stderr.strip()}", file=sys.stderr)
