"""How the stack knows its processes: start-up timing, lost PID files, recycled PIDs."""

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from stedi.stack import kafka_server
from stedi.stack.process import TAG, Service, StackError, port_holder, start_time

# A service whose exec comes late: for 1.5 s its command line is the launcher's
# python, then it becomes `sleep 600`. Java's launcher re-execs itself the same way.
DELAYED_EXEC = [
    sys.executable,
    "-c",
    "import os, time; time.sleep(1.5); os.execv('/bin/sleep', ['sleep', '600'])",
]


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


@pytest.fixture
def service(tmp_path):
    svc = Service("slow", tmp_path)
    yield svc
    svc.stop(timeout=5)


def test_a_service_still_exec_ing_counts_as_running_not_as_exited(service):
    pid = service.start(DELAYED_EXEC)
    assert service.pid() == pid  # before its exec: the old check took it for gone
    service.wait_until(lambda: b"sleep 600" in cmdline(pid), "exec", timeout=20)
    assert service.pid() == pid


def test_a_lost_pid_file_is_found_again_by_the_process_tag(service):
    # The late exec is the test above's subject; this one needs only the tag. With it, a
    # loaded fresh-clone make test once found no tagged process (the scan may meet the exec).
    pid = service.start(["sleep", "600"])
    service.pid_file.unlink()
    assert service.pid() == pid
    assert service.pid_file.read_text().split() == [str(pid), str(start_time(pid))]


def test_a_process_started_before_its_launcher_died_is_stopped_without_a_pid_file(tmp_path):
    service = Service("orphan", tmp_path)
    # What a launcher killed between Popen and writing the PID file leaves behind.
    orphan = subprocess.Popen(["sleep", "600"], env={**os.environ, TAG: service.tag})
    assert not service.pid_file.exists()
    assert service.stop(timeout=5)
    assert orphan.wait(timeout=5) is not None
    assert service.pid() is None


def test_a_recycled_pid_is_not_taken_for_ours(tmp_path):
    stranger = subprocess.Popen(["sleep", "600"])  # no tag: not started by the stack
    try:
        service = Service("recycled", tmp_path)
        service.pid_file.parent.mkdir(parents=True)
        # The PID file of an earlier process whose PID the stranger now has.
        service.pid_file.write_text(f"{stranger.pid} {start_time(stranger.pid) - 1}\n")
        assert service.pid() is None
        assert not service.stop(timeout=5)
        assert stranger.poll() is None, "a process that is not ours was stopped"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_service_that_exits_while_starting_says_so_with_its_log(service):
    service.start([sys.executable, "-c", "print('cannot bind'); raise SystemExit(3)"])
    with pytest.raises(StackError, match=r"exited while starting(.|\n)*cannot bind"):
        service.wait_until(lambda: False, "answer", timeout=20)


def test_the_holder_of_a_taken_port_is_named():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_holder(sock.getsockname()[1]).startswith(f"pid {os.getpid()}:")


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    """Kafka's storage tool would take such an id for an option and not format."""
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(kafka_server.uuid, "uuid4", lambda: next(drawn))
    cluster_id = kafka_server.new_cluster_id()
    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA"  # the second draw: the first began "-"
