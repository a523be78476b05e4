"""The local Redis server of `make up`: its config, readiness and start."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from stedi.config import Settings
from stedi.stack.process import Service, StackError, port_holder, port_open


def redis_conf(settings: Settings, data: Path) -> str:
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {settings.redis_port}",
            "protected-mode yes",
            "daemonize no",
            # Redis would write its process title over its environment, and with it the
            # tag by which `make down` finds a Redis whose PID file was never written.
            "set-proc-title no",
            f"dir {data}",
            "dbfilename dump.rdb",
            # RDB snapshots (and one at shutdown) keep the data across make down/up and
            # the replication id, so the Redis source continues instead of resyncing.
            "save 60 1 10 100",
            "appendonly no",
            # The Redis source resumes from this backlog after being down: keep it
            # large and never free it, even while no replica is connected.
            "repl-backlog-size 256mb",
            "repl-backlog-ttl 0",
            "repl-diskless-sync no",
            "",
        ]
    )


def redis_answers(settings: Settings) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", settings.redis_port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(service: Service, settings: Settings) -> None:
    if (pid := service.pid()) is not None:
        print(f"   redis already running (pid {pid})")
        return
    if port_open(settings.redis_port):
        raise StackError(
            f"port {settings.redis_port} is taken by another process "
            f"({port_holder(settings.redis_port)}): stop it, or set REDIS_PORT"
        )
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server is not installed: run `make install`")
    data = service.stack_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "redis.conf"
    conf.write_text(redis_conf(settings, data))
    service.start([binary, str(conf)])
    service.wait_until(lambda: redis_answers(settings), "answer PING", 30)
    print(f"   redis ready on 127.0.0.1:{settings.redis_port} (pid {service.pid()})")
