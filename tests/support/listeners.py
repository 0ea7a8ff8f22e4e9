"""Which TCP/UDP sockets a process tree listens on, read from the kernel with psutil.

- ``listening(pid)``: ``Listener``s of ``pid`` and all its descendants now (TCP ``LISTEN`` and bound UDP).
- ``ListenerWatch(pid)``: a context manager that samples ``listening(pid)`` in a thread every ``interval_s``
  while its block runs (a job's listeners live as long as its cluster) and keeps every one it saw.
- ``is_loopback(address)``: 127.0.0.0/8 and ::1 (and their IPv4-mapped form); ``0.0.0.0`` and ``::`` are not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from dataclasses import dataclass
from types import TracebackType

import psutil


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port} (pid {self.pid}, {self.name})"


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listening(pid: int) -> set[Listener]:
    found: set[Listener] = set()
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                if not conn.laddr:
                    continue
                tcp_listen = conn.status == psutil.CONN_LISTEN
                udp_bound = conn.status == psutil.CONN_NONE and not conn.raddr
                if tcp_listen or udp_bound:
                    found.add(Listener(proc.pid, name, conn.laddr.ip, conn.laddr.port))
    return found


class ListenerWatch:
    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.seen: set[Listener] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= listening(self.pid)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ListenerWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.seen |= listening(self.pid)

    def exposed(self) -> list[str]:
        """Every listener seen on an address that is not loopback, readable."""
        return sorted(str(item) for item in self.seen if not is_loopback(item.address))

    def ports(self) -> set[int]:
        return {item.port for item in self.seen}
