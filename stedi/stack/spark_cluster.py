"""A local Spark standalone cluster for make run's engine: a master and N workers.

pyspark's package has Spark's jars and `bin/spark-class`, but not the `sbin` scripts
that start a cluster: each daemon is `spark-class` with its main class, bound to
127.0.0.1, with a small heap. A worker offers one core and a little memory, so
each of the engine's executors is one core of this machine. The engine reaches the
master at `spark://127.0.0.1:<STEDI_SPARK_MASTER_PORT>` (`stack_env`).
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from pathlib import Path

from stedi.config import Settings
from stedi.stack.process import Service, StackError, port_holder, port_open

MAX_WORKERS = 4
WORKER_CORES = 1
WORKER_MEMORY = "768m"
# An executor's heap, within what its worker offers (Spark's default would ask for 1g).
EXECUTOR_MEMORY = "512m"
# The master's and the workers' own heaps: they only keep track of the cluster.
DAEMON_MEMORY = "192m"


def spark_home() -> Path:
    """pyspark's package folder, which is a Spark home (jars/, bin/spark-class)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("pyspark is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0])


def master_url(settings: Settings) -> str:
    return f"spark://127.0.0.1:{settings.spark_master_port}"


def stack_env(settings: Settings) -> dict[str, str]:
    """What make run's engine needs to run on the cluster (nothing without workers)."""
    if settings.spark_workers == 0:
        return {}
    return {"SPARK_MASTER": master_url(settings), "SPARK_EXECUTOR_MEMORY": EXECUTOR_MEMORY}


def master_argv(home: Path, settings: Settings) -> list[str]:
    return [
        str(home / "bin" / "spark-class"),
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.spark_master_port),
        "--webui-port",
        str(settings.spark_webui_port),
    ]


def worker_argv(home: Path, settings: Settings, number: int, work_dir: Path) -> list[str]:
    """Worker `number` (from 1); its own port is one the system picks, on loopback."""
    return [
        str(home / "bin" / "spark-class"),
        "org.apache.spark.deploy.worker.Worker",
        "--host",
        "127.0.0.1",
        "--webui-port",
        str(settings.spark_webui_port + number),
        "--cores",
        str(WORKER_CORES),
        "--memory",
        WORKER_MEMORY,
        "--work-dir",
        str(work_dir),
        master_url(settings),
    ]


def alive_workers(settings: Settings) -> int | None:
    """How many workers the master counts alive (its UI's JSON), None if it does not answer."""
    url = f"http://127.0.0.1:{settings.spark_webui_port}/json/"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(json.load(answer).get("aliveworkers", 0))
    except (OSError, ValueError):
        return None


def start(master: Service, workers: list[Service], settings: Settings) -> None:
    """Starts whichever of the master and `workers` is not running; returns once the master
    counts every worker alive."""
    home = spark_home()
    env = {"SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    env["SPARK_DAEMON_MEMORY"] = DAEMON_MEMORY
    if master.pid() is None:
        for port in (settings.spark_master_port, settings.spark_webui_port):
            if port_open(port):
                raise StackError(
                    f"port {port} is taken by another process ({port_holder(port)}): stop it, "
                    "or choose other ports (STEDI_SPARK_MASTER_PORT, STEDI_SPARK_WEBUI_PORT)"
                )
        master.start(master_argv(home, settings), env=env)
        master.wait_until(lambda: alive_workers(settings) is not None, "answer", 60)
        print(f"   spark master ready on {master_url(settings)} (pid {master.pid()})")
    for number, worker in enumerate(workers, start=1):
        if worker.pid() is None:
            work_dir = worker.stack_dir / worker.name
            work_dir.mkdir(parents=True, exist_ok=True)
            worker.start(worker_argv(home, settings, number, work_dir), env=env)
    master.wait_until(
        lambda: (alive_workers(settings) or 0) >= len(workers), "count its workers alive", 60
    )
    print(f"   spark workers: {len(workers)}, UI http://127.0.0.1:{settings.spark_webui_port}")
