"""Holds every packet of a netfilter queue for a fixed delay, then lets it through: latency on one host's link.

    python -m tests.support.link_delay QUEUE DELAY_MS

This machine's kernel has no ``netem`` queueing discipline, so latency is added in user space instead: an
iptables rule (``-j NFQUEUE --queue-num QUEUE --queue-bypass``) inside the host's network namespace hands each
packet to this process, which speaks the nfnetlink_queue protocol on a raw netlink socket and gives each packet
its ACCEPT verdict ``DELAY_MS`` after it arrived. Packets keep their order (the delay is the same for all). Run it
inside the same namespace as the rule (``ip netns exec``). It prints ``ready`` once bound and runs until killed.
"""

from __future__ import annotations

import collections
import errno
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2


def _attribute(kind: int, value: bytes) -> bytes:
    header = struct.pack("=HH", 4 + len(value), kind)
    padding = b"\0" * (-len(value) % 4)
    return header + value + padding


def _message(kind: int, queue: int, attributes: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    # nfgenmsg: address family (unspecified), version 0, and the queue number in network order.
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attributes
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body


def _bind(sock: socket.socket, queue: int) -> None:
    command = _attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
    sock.send(_message(NFQNL_MSG_CONFIG, queue, command, NLM_F_REQUEST | NLM_F_ACK))
    _expect_ack(sock)
    params = _attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
    sock.send(_message(NFQNL_MSG_CONFIG, queue, params, NLM_F_REQUEST | NLM_F_ACK))
    _expect_ack(sock)


def _expect_ack(sock: socket.socket) -> None:
    reply = sock.recv(65536)
    _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
    if kind == NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", reply, 16)
        if error != 0:
            raise OSError(-error, f"nfnetlink_queue refused the configuration: error {-error}")


def _packet_ids(data: bytes) -> list[int]:
    """The packet ids of every queued-packet message in one read from the socket."""
    ids = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _, _, _ = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            position = offset + 20
            while position + 4 <= offset + length:
                size, attribute = struct.unpack_from("=HH", data, position)
                if size < 4:
                    break
                if attribute & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, position + 4)[0])
                position += (size + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def _accept(sock: socket.socket, queue: int, packet_id: int) -> None:
    verdict = _attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
    sock.send(_message(NFQNL_MSG_VERDICT, queue, verdict))


def run(queue: int, delay: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((0, 0))
    _bind(sock, queue)
    print("ready", flush=True)
    held: collections.deque[tuple[float, int]] = collections.deque()
    while True:
        timeout = max(held[0][0] - time.monotonic(), 0.0) if held else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            arrived = time.monotonic()
            try:
                data = sock.recv(1 << 20)
            except OSError as error:
                # The kernel's queue overflowed and dropped packets (as a full router would): go on.
                if error.errno != errno.ENOBUFS:
                    raise
                data = b""
            held.extend((arrived + delay, packet_id) for packet_id in _packet_ids(data))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _accept(sock, queue, held.popleft()[1])


if __name__ == "__main__":
    run(int(sys.argv[1]), float(sys.argv[2]) / 1000)
