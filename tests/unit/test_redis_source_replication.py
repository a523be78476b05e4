"""The replication client against a scripted master on a local socket: deadlines and parsing."""

import socket
import threading

import pytest

from stedi.redis_source.replication import ReplicaConnection, ReplicationError

ZADD = b"*4\r\n$4\r\nZADD\r\n$8\r\nCustomer\r\n$1\r\n0\r\n$3\r\nSam\r\n"


class Master:
    """Answers the handshake, then sends `after_psync` and keeps the link open, silent."""

    def __init__(self, after_psync: bytes):
        self.after_psync = after_psync
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            received = b""
            while b"PSYNC" not in received or not received.endswith(b"\r\n"):
                received += conn.recv(4096)
                if b"REPLCONF" in received and b"+OK" not in received:
                    conn.sendall(b"+OK\r\n")
                    received += b"+OK"
            conn.sendall(self.after_psync)
            self.done.wait(30)  # silent, but the connection stays open

    def close(self) -> None:
        self.done.set()
        self.server.close()


@pytest.fixture
def master_factory():
    masters = []

    def make(after_psync: bytes) -> Master:
        masters.append(Master(after_psync))
        return masters[-1]

    yield make
    for master in masters:
        master.close()


def test_a_master_that_goes_silent_mid_rdb_raises_instead_of_hanging(master_factory):
    master = master_factory(b"+FULLRESYNC abc 100\r\n\n\n$1000\r\n" + b"R" * 10)
    link = ReplicaConnection("127.0.0.1", master.port, timeout=0.2, idle_timeout=1.0)
    with pytest.raises(ReplicationError, match="sent nothing for"):
        link.psync(None, None)
    link.close()


def test_a_silent_command_stream_raises_after_the_idle_timeout(master_factory):
    master = master_factory(b"+CONTINUE abc\r\n")
    link = ReplicaConnection("127.0.0.1", master.port, timeout=0.2, idle_timeout=1.0)
    sync = link.psync("abc", 100)
    assert (sync.full, sync.replid, sync.offset) == (False, "abc", 100)
    with pytest.raises(ReplicationError, match="sent nothing for"):
        while True:
            assert link.read_commands() == []
    link.close()


def test_after_keepalives_and_the_rdb_the_commands_arrive_with_their_sizes(master_factory):
    master = master_factory(
        b"+FULLRESYNC abc 100\r\n\n\n$5\r\nREDIS" + ZADD + b"*1\r\n$4\r\nPING\r\n"
    )
    link = ReplicaConnection("127.0.0.1", master.port, timeout=0.2, idle_timeout=5.0)
    sync = link.psync(None, None)
    assert (sync.full, sync.replid, sync.offset) == (True, "abc", 100)
    commands = []
    while len(commands) < 2:
        commands += link.read_commands()
    assert commands == [
        ([b"ZADD", b"Customer", b"0", b"Sam"], len(ZADD)),
        ([b"PING"], 14),
    ]
    link.close()
