"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import re
import time
from importlib.metadata import version

from bench.settings import ROOT


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _memory_gb() -> float:
    with open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])  # MemTotal
    return round(kb / 1024 / 1024, 1)


def _kafka_version() -> str:
    """The broker's version, from the jar `make install` brought for it."""
    for jar in sorted((ROOT / "build" / "jars" / "kafka").glob("kafka_*.jar")):
        match = re.match(r"kafka_[\d.]+-(.+)\.jar$", jar.name)
        if match:
            return match[1]
    return ""


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "spark": version("pyspark"),
        "kafka": _kafka_version(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
