"""A minimal Redis replication client: what a replica does, minus keeping the data.

Handshake: AUTH (optional), REPLCONF capa psync2, PSYNC <replid> <offset+1>.
The master answers +CONTINUE (partial resync: the stream resumes right after
the offset given) or +FULLRESYNC <replid> <offset> followed by an RDB payload,
which is read and discarded (the publisher takes its snapshot with ordinary
reads instead). After that the master streams every write command as a RESP
array; `offset` counts the stream's bytes exactly as the master does, which is
what makes a later PSYNC lossless. The client must send REPLCONF ACK <offset>
regularly or the master drops it after repl-timeout.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

CRLF = b"\r\n"


class ReplicationError(RuntimeError):
    """The master refused or broke the replication protocol."""


@dataclass
class SyncResult:
    full: bool  # True after +FULLRESYNC: the position given was not continued
    replid: str
    offset: int  # the master's offset of the last byte already accounted for


class ReplicaConnection:
    """One replication link to a Redis master.

    Every read has a deadline: a master that sends nothing for `idle_timeout`
    seconds (it pings a live replica every 10 s and sends newlines while it
    prepares an RDB) is taken for gone, so a master that hangs or vanishes from
    the network mid-transfer raises ReplicationError instead of hanging the source.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str | None = None,
        timeout: float = 1.0,
        idle_timeout: float = 60.0,
    ):
        self.host, self.port, self.password = host, port, password
        self.timeout, self.idle_timeout = timeout, idle_timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.pos = 0
        self.last_data = time.monotonic()

    # --- raw I/O ---------------------------------------------------------------
    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=10)
        self.sock.settimeout(self.timeout)
        self.buf.clear()
        self.pos = 0
        self.last_data = time.monotonic()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send_command(self, *args: bytes | str) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))

    def _fill(self) -> bool:
        """Read more bytes, waiting at most `timeout`; False if none came.

        Raises ReplicationError when the master has been silent for `idle_timeout`.
        """
        if self.pos > 65536:  # drop consumed bytes now and then
            del self.buf[: self.pos]
            self.pos = 0
        try:
            chunk = self.sock.recv(262144)
        except TimeoutError:
            silent = time.monotonic() - self.last_data
            if silent >= self.idle_timeout:
                raise ReplicationError(
                    f"the Redis master sent nothing for {silent:.0f} s: link taken for dead"
                ) from None
            return False
        if not chunk:
            raise ConnectionError("the Redis master closed the replication link")
        self.buf += chunk
        self.last_data = time.monotonic()
        return True

    def _read_line(self, deadline: float) -> bytes:
        while True:
            end = self.buf.find(CRLF, self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            if not self._fill() and time.monotonic() >= deadline:
                raise ReplicationError("no answer from the Redis master")

    def _simple_reply(self, what: str, wait: float = 30.0) -> bytes:
        line = self._read_line(time.monotonic() + wait)
        if line.startswith(b"-"):
            raise ReplicationError(f"{what} refused: {line[1:].decode(errors='replace')}")
        return line

    # --- handshake ---------------------------------------------------------------
    def psync(self, replid: str | None, offset: int | None) -> SyncResult:
        """Connect and ask to continue after `offset` of `replid` (None: full sync)."""
        self.connect()
        if self.password:
            self.send_command("AUTH", self.password)
            self._simple_reply("AUTH")
        self.send_command("REPLCONF", "capa", "psync2")
        self._simple_reply("REPLCONF")
        if replid is None or offset is None:
            self.send_command("PSYNC", "?", "-1")
        else:
            self.send_command("PSYNC", replid, str(offset + 1))
        reply = self._simple_reply("PSYNC", wait=60.0).decode()
        if reply.startswith("+CONTINUE"):
            parts = reply.split()
            return SyncResult(False, parts[1] if len(parts) > 1 else replid, offset)
        if reply.startswith("+FULLRESYNC"):
            _, new_replid, new_offset = reply.split()
            self._skip_rdb()
            return SyncResult(True, new_replid, int(new_offset))
        raise ReplicationError(f"unexpected PSYNC reply: {reply}")

    def _skip_rdb(self) -> None:
        """Discard the RDB payload: `$<length>\\r\\n<bytes>`, after optional keep-alive newlines.

        No overall deadline (a big RDB may take long); each read has the idle deadline.
        """
        while True:
            if self.pos >= len(self.buf):
                self._fill()
                continue
            if self.buf[self.pos : self.pos + 1] == b"\n":
                self.pos += 1
                continue
            break
        header = self._read_line(time.monotonic() + self.idle_timeout)
        if not header.startswith(b"$") or header.startswith(b"$EOF:"):
            raise ReplicationError(f"unexpected RDB header: {header[:40]!r}")
        remaining = int(header[1:])
        while remaining > 0:
            available = len(self.buf) - self.pos
            if available == 0:
                self._fill()
                continue
            taken = min(available, remaining)
            self.pos += taken
            remaining -= taken
        self.last_data = time.monotonic()

    # --- the command stream ------------------------------------------------------
    def _parse_command(self) -> tuple[list[bytes], int] | None:
        """One complete RESP array from the buffer, with its size in bytes; None if partial."""
        buf, start = self.buf, self.pos
        end = buf.find(CRLF, start)
        if end < 0:
            return None
        if buf[start : start + 1] != b"*":
            found = bytes(buf[start:end][:40])
            raise ReplicationError(f"unexpected bytes in the command stream: {found!r}")
        count, cursor, argv = int(buf[start + 1 : end]), end + 2, []
        for _ in range(count):
            end = buf.find(CRLF, cursor)
            if end < 0:
                return None
            length = int(buf[cursor + 1 : end])
            data_start = end + 2
            if len(buf) < data_start + length + 2:
                return None
            argv.append(bytes(buf[data_start : data_start + length]))
            cursor = data_start + length + 2
        self.pos = cursor
        return argv, cursor - start

    def read_commands(self) -> list[tuple[list[bytes], int]]:
        """The commands that arrive within the timeout (possibly none), with their sizes."""
        commands = []
        while True:
            parsed = self._parse_command()
            if parsed is not None:
                commands.append(parsed)
                continue
            if commands or not self._fill():
                return commands

    def ack(self, offset: int) -> None:
        self.send_command("REPLCONF", "ACK", str(offset))
