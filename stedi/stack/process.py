"""The local stack's process model: start, find and stop one service process.

A process is ours when both hold:
- its PID file names it with its start time (field 22 of /proc/PID/stat), which
  a recycled PID cannot repeat, and which is set at fork, so it is right even
  while the process is still exec'ing (its command line is then empty);
- or, when the PID file is missing (the launcher died between starting it and
  writing the file), its environment carries this checkout's tag
  STEDI_STACK_TAG=<stack dir>:<service name>, set by `start` before exec.
Processes are stopped by PID only, never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

TAG = "STEDI_STACK_TAG"


class StackError(RuntimeError):
    """A service did not start or stop; the message says what to do."""


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log yet)"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which the process started; None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of stat; fields start at 3


def alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child, so it is not a zombie
    except ChildProcessError:
        pass
    return _stat_fields(pid) is not None


def child_processes() -> dict[int, list[int]]:
    """Each live process's direct children, by their parent PID (field 4 of stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def children(pid: int) -> list[int]:
    """The direct child processes of `pid`."""
    return child_processes().get(pid, [])


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    below = child_processes()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(below.get(pid, []))
    return found


def tagged_processes(prefix: str) -> Iterator[tuple[int, str]]:
    """(pid, tag) of every live process whose STEDI_STACK_TAG starts with `prefix`."""
    needle = f"{TAG}={prefix}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        for var in environ.split(b"\0"):
            if var.startswith(needle):
                pid = int(entry.name)
                if alive(pid):
                    yield pid, var.split(b"=", 1)[1].decode(errors="replace")
                break


def stop_pids(pids: list[int], timeout: float) -> list[int]:
    """SIGTERM each, wait up to `timeout` for all to exit, SIGKILL the rest; the killed."""
    for pid in pids:
        with _gone_ok():
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    killed = [p for p in pids if alive(p)]
    for pid in killed:
        with _gone_ok():
            os.kill(pid, signal.SIGKILL)
    while any(alive(p) for p in killed):
        time.sleep(0.1)
    return killed


class _gone_ok:
    """Ignore ProcessLookupError: the process ended by itself meanwhile."""

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is ProcessLookupError


@dataclass
class Service:
    """One long-running process of the stack, with a PID file and a log file."""

    name: str
    stack_dir: Path

    @property
    def tag(self) -> str:
        return f"{self.stack_dir}:{self.name}"

    @property
    def pid_file(self) -> Path:
        return self.stack_dir / "pids" / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.stack_dir / "logs" / f"{self.name}.log"

    def _recorded(self) -> int | None:
        try:
            pid, started = (int(x) for x in self.pid_file.read_text().split())
        except (FileNotFoundError, ValueError):
            return None
        return pid if start_time(pid) == started else None

    def _record(self, pid: int) -> None:
        started = start_time(pid)
        if started is None:
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{pid} {started}\n")
        tmp.replace(self.pid_file)

    def tagged(self) -> list[int]:
        """Every live process started as this service (its forks included), oldest first."""
        pids = [pid for pid, tag in tagged_processes(self.tag) if tag == self.tag]
        return sorted(pids, key=lambda p: start_time(p) or 0)

    def pid(self) -> int | None:
        """The PID of our running process, or None. A lost PID file is written again."""
        pid = self._recorded()
        if pid is not None:
            return pid
        found = self.tagged()
        if not found:
            self.pid_file.unlink(missing_ok=True)
            return None
        self._record(found[0])
        return found[0]

    def start(self, argv: list[str], env: dict | None = None, cwd: Path | None = None) -> int:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={**os.environ, **(env or {}), TAG: self.tag},
                start_new_session=True,  # Ctrl-C in the terminal does not reach it
            )
        self._record(proc.pid)
        return proc.pid

    def stop(self, timeout: float = 60) -> bool:
        """SIGTERM, wait for a graceful exit, SIGKILL after `timeout`. True if it was running.

        Stops the recorded process and any other process tagged as this service
        (e.g. one whose launcher died before recording it).
        """
        return bool(stop_together([self], timeout))

    def pids(self) -> list[int]:
        """The recorded process and any other process tagged as this service."""
        return sorted({p for p in (self._recorded(), *self.tagged()) if p is not None})

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(
                    f"{self.name} exited while starting. Last lines of {self.log}:\n"
                    f"{tail(self.log)}"
                )
            if ready():
                return
            time.sleep(0.5)
        raise StackError(
            f"{self.name} did not {what} within {timeout:.0f} s. "
            f"Last lines of {self.log}:\n{tail(self.log)}"
        )


def stop_together(services: list[Service], timeout: float = 60) -> list[Service]:
    """Stops the services at once (SIGTERM to all, SIGKILL to what is left after `timeout`);
    returns those that were running. A Kafka cluster's nodes stop cleanly only together:
    the last node alone waits for a quorum that has gone."""
    pids = {service.name: service.pids() for service in services}
    every = [pid for found in pids.values() for pid in found]
    killed = set(stop_pids(every, timeout)) if every else set()
    for service in services:
        for pid in killed & set(pids[service.name]):
            print(f"   {service.name} (pid {pid}) did not stop in {timeout:.0f} s: killed it")
        service.pid_file.unlink(missing_ok=True)
    return [service for service in services if pids[service.name]]


# --- ports ------------------------------------------------------------------------------
def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def port_holder(port: int) -> str:
    """'pid N: command line' of the process listening on `port`, as far as /proc tells."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if sockets:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            if _links(entry / "fd") & sockets:
                cmdline = _read(entry / "cmdline").replace(b"\0", b" ").strip()
                return f"pid {entry.name}: {cmdline.decode(errors='replace')[:200]}"
    return "a process this user cannot see (try `ss -ltnp` as root)"


def _links(fd_dir: Path) -> set[str]:
    """Targets of a process's open files; those closed meanwhile are left out."""
    links = set()
    try:
        fds = list(fd_dir.iterdir())
    except OSError:  # gone, or another user's
        return links
    for fd in fds:
        try:
            links.add(os.readlink(fd))
        except OSError:
            continue
    return links


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
