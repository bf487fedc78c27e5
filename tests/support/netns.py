"""A fleet of hosts on one machine: network namespaces joined by veth links to a private PostgreSQL.

Layout (one "slot" per fleet, so two fleets on the machine do not clash; every name starts with ``pgqdf``)::

    root namespace: bridge pgqdf<slot>br, addresses 10.231.<slot>.1 (the database link)
                    and 10.231.<slot>.2 (the records link); a private PostgreSQL listens on both
    pgqdf<slot>h<n>: one namespace per host, eth0 = 10.231.<slot>.<10+n>, a veth to the bridge

Faults are applied inside a host's namespace, to its traffic with the database address only, so a handler's own
records (written to the records address) still arrive while its host is cut off from the queue:

- ``partition``: iptables DROP both ways (silent: no RST, no ICMP), ``heal`` removes it;
- ``degrade``: a fixed delay on every packet the host sends to the database (an NFQUEUE held by
  ``tests/support/link_delay.py``: this kernel has no ``netem``) and random loss both ways (iptables
  ``statistic``);
- clock skew: a daemon started with ``skew`` runs under libfaketime (``faketime -f +Ns``).

Needs root, ``ip`` (iproute2), ``iptables-legacy`` (iptables) and, for skew, ``faketime``; ``missing_tools``
says what is absent. PostgreSQL is initdb'ed in a temporary folder and run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.daemon import Daemon, wait_for
from tests.support.ports import FLEET_PORTS, free_ports

REPO = Path(__file__).resolve().parents[2]


def _postgres_binaries() -> Path:
    """PostgreSQL 15's programs (Debian's layout), or the newest version installed when 15 is absent."""
    preferred = Path("/usr/lib/postgresql/15/bin")
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return preferred if preferred.exists() or not installed else installed[-1].parent


PG_BIN = _postgres_binaries()
IPTABLES = "iptables-legacy"
CHAIN = "PGQDF"
DELAY_QUEUE = 7


def missing_tools(skew: bool = False) -> list[str]:
    """Why a fleet cannot be built here (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need it)")
    for tool in ["ip", IPTABLES] + (["faketime"] if skew else []):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not (PG_BIN / "initdb").exists():
        missing.append(str(PG_BIN / "initdb"))
    return missing


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Host:
    """One host: a network namespace with one link to the database."""

    name: str
    namespace: str
    link: str
    address: str
    database_address: str
    database_port: int
    delayer: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *args]

    def iptables(self, *args: str) -> None:
        run(*self.command(IPTABLES, "-w", *args))

    def _to_database(self) -> list[str]:
        return ["-d", self.database_address, "-p", "tcp", "--dport", str(self.database_port)]

    def _from_database(self) -> list[str]:
        return ["-s", self.database_address, "-p", "tcp", "--sport", str(self.database_port)]

    def partition(self) -> None:
        """Every packet between this host and the database vanishes, both ways."""
        self.iptables("-A", CHAIN, *self._to_database(), "-j", "DROP")
        self.iptables("-A", CHAIN, *self._from_database(), "-j", "DROP")

    def degrade(self, delay_ms: float, loss: float) -> None:
        """``delay_ms`` more on every round trip to the database, and ``loss`` of the packets lost each way."""
        if loss > 0:
            for match in (self._to_database(), self._from_database()):
                self.iptables(
                    "-A", CHAIN, *match, "-m", "statistic", "--mode", "random", "--probability", str(loss), "-j", "DROP"
                )
        if delay_ms > 0:
            self.delayer = subprocess.Popen(
                self.command(sys.executable, "-m", "tests.support.link_delay", str(DELAY_QUEUE), str(delay_ms)),
                cwd=REPO,
                stdout=subprocess.PIPE,
            )
            assert self.delayer.stdout is not None
            if self.delayer.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"the link delay of {self.name} did not start")
            queue = ["-j", "NFQUEUE", "--queue-num", str(DELAY_QUEUE), "--queue-bypass"]
            self.iptables("-A", CHAIN, *self._to_database(), *queue)

    def heal(self) -> None:
        """Removes every fault from this host's link."""
        self.iptables("-F", CHAIN)
        if self.delayer is not None:
            self.delayer.kill()
            self.delayer.wait(10)
            self.delayer = None


@dataclass
class Network:
    """The bridge, the hosts' namespaces and links of one fleet; ``close`` removes all of it."""

    slot: int
    hosts: list[Host] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"pgqdf{self.slot}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def database_address(self) -> str:
        return f"10.231.{self.slot}.1"

    @property
    def records_address(self) -> str:
        return f"10.231.{self.slot}.2"

    @classmethod
    def create(cls, hosts: int, database_port: int) -> Network:
        network = cls(_claim_slot())
        try:
            network._build(hosts, database_port)
        except BaseException:
            network.close()
            raise
        return network

    def _build(self, count: int, database_port: int) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.database_address}/24", "dev", self.bridge)
        run("ip", "addr", "add", f"{self.records_address}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for n in range(1, count + 1):
            namespace = f"{self.prefix}h{n}"
            if n > 1:  # the first namespace was created when the slot was claimed
                run("ip", "netns", "add", namespace)
            host = Host(
                name=f"h{n}",
                namespace=namespace,
                link=f"{self.prefix}v{n}",
                address=f"10.231.{self.slot}.{10 + n}",
                database_address=self.database_address,
                database_port=database_port,
            )
            self.hosts.append(host)
            run("ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            run("ip", "link", "set", host.link, "master", self.bridge, "up")
            run("ip", "-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")
            host.iptables("-N", CHAIN)
            host.iptables("-I", "INPUT", "-j", CHAIN)
            host.iptables("-I", "OUTPUT", "-j", CHAIN)

    def close(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.heal()
        for n in range(1, max(len(self.hosts), 1) + 1):
            run("ip", "link", "del", f"{self.prefix}v{n}", check=False)
            run("ip", "netns", "del", f"{self.prefix}h{n}", check=False)
        run("ip", "link", "del", self.bridge, check=False)


def _claim_slot() -> int:
    """A free slot: creating its first namespace is the lock (``ip netns add`` fails when the name exists)."""
    slots = list(range(1, 250))
    random.shuffle(slots)
    for slot in slots:
        if run("ip", "netns", "add", f"pgqdf{slot}h1", check=False).returncode == 0:
            return slot
    raise RuntimeError("no free pgqdf network slot: remove stale namespaces with `ip netns del pgqdf...`")


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in ``folder``, run as ``postgres``), on the fleet's addresses."""

    def __init__(self, addresses: list[str], port: int) -> None:
        # Its own folder under the system's temporary directory: the postgres user cannot enter root's
        # private ones (pytest's, for one).
        self.folder = Path(tempfile.mkdtemp(prefix="pgqdf-postgres-"))
        self.data = self.folder / "pgdata"
        self.addresses = addresses
        self.port = port

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [str(PG_BIN / tool), *args], capture_output=True, text=True, timeout=timeout, user="postgres", cwd="/"
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed with status {done.returncode}: {done.stdout}{done.stderr}")

    def start(self) -> None:
        shutil.chown(self.folder, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        subnet = ".".join(self.addresses[0].split(".")[:3]) + ".0/24"
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {subnet} trust\nhost all all 127.0.0.1/32 trust\n")
        settings = {
            "listen_addresses": f"'127.0.0.1,{','.join(self.addresses)}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.folder / "server.log"), "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._pg("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def dsn(self, address: str, database: str = "postgres") -> str:
        return f"postgresql://postgres@{address}:{self.port}/{database}"


def free_pg_port() -> int:
    ports = list(FLEET_PORTS)
    random.shuffle(ports)
    return free_ports(ports, 1)[0]


class HostDaemon(Daemon):
    """``pgqd`` started inside a host's namespace (under libfaketime when ``skew`` is given)."""

    def __init__(self, host: Host, config_path: Path, dsn: str, env: dict[str, str], skew: float | None = None) -> None:
        faked = {"FAKETIME_DONT_FAKE_MONOTONIC": "1"} if skew is not None else {}
        super().__init__(config_path, dsn, {**env, **faked})
        self.host = host
        self.skew = skew
        # ``ip netns exec`` execs what it runs, but ``faketime`` forks pgqd and waits for it.
        self.launched_as_child = skew is not None

    def command(self) -> list[str]:
        clock = ["faketime", "-f", f"{self.skew:+g}s"] if self.skew is not None else []
        return self.host.command(*clock, *super().command())

    def kill(self) -> None:
        """SIGKILL to the supervisor and every worker at once (the daemon's own process group)."""
        os.killpg(self.group, signal.SIGKILL)
        wait_for(lambda: self.process is not None and self.process.poll() is not None, 10, "the killed supervisor")
        wait_for(lambda: not _group_alive(self.group), 10, "the killed workers")


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Fleet:
    """The network and the database of a fleet; daemons are started per host by the caller."""

    network: Network
    postgres: PrivatePostgres

    @property
    def hosts(self) -> list[Host]:
        return self.network.hosts

    def admin_dsn(self, database: str = "postgres") -> str:
        """From the root namespace, over loopback (never faulted)."""
        return self.postgres.dsn("127.0.0.1", database)

    def queue_dsn(self, database: str) -> str:
        """What the hosts' daemons use: the database link, where the faults are."""
        return self.postgres.dsn(self.network.database_address, database)

    def records_dsn(self, database: str) -> str:
        """What the hosts' handlers record on: the records address, never faulted."""
        return self.postgres.dsn(self.network.records_address, database)


@contextlib.contextmanager
def fleet(hosts: int = 3) -> Iterator[Fleet]:
    """Builds the network and starts the database; tears both down on the way out, whatever happened."""
    port = free_pg_port()
    network = Network.create(hosts, port)
    postgres = PrivatePostgres([network.database_address, network.records_address], port)
    try:
        postgres.start()
        yield Fleet(network, postgres)
    finally:
        with contextlib.suppress(Exception):
            postgres.stop()
        network.close()
        _settle(network)


def _settle(network: Network) -> None:
    """Waits (bounded) until the namespaces are gone, so a next fleet may take the slot."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        names = [line.split()[0] for line in run("ip", "netns", "list", check=False).stdout.splitlines() if line]
        if not any(name.startswith(f"{network.prefix}h") for name in names):
            return
        time.sleep(0.05)
