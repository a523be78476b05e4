"""The Docker path, checked statically: no Docker engine runs on these machines.

docker-compose.yaml is loaded by compose-go (the Compose Specification's
reference implementation, built by `make install`), which validates it against
the specification's JSON schema offline; then the project's own rules are
asserted on the normalised project. Integration tier, without services: the
validator needs Go and hadolint comes with the test tools (`make install-test`),
which `make unit` does without.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from stedi.config import Settings
from stedi.stack.services import stack_topics
from tests import image_spark

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSECHECK = ROOT / "build" / "bin" / "composecheck"
COMPOSE = ROOT / "docker-compose.yaml"
SPARK_DOCKERFILE = ROOT / "docker" / "spark" / "Dockerfile"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
# Built by compose: the app's image (the root Dockerfile) and the Spark containers'.
BUILT_IMAGES = {"stedi:local": ROOT, "stedi-spark:local": SPARK_DOCKERFILE.parent}


def load(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMPOSECHECK), str(path)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def project() -> dict:
    result = load(COMPOSE)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pom_property(name: str) -> str:
    pom = (ROOT / "jvm" / "pom.xml").read_text()
    return re.search(rf"<{name}>([^<]+)</{name}>", pom).group(1)


def test_the_validator_rejects_a_file_that_breaks_the_specification(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    text = COMPOSE.read_text().replace("    healthcheck:", "    health_check:", 1)
    broken.write_text(text)
    result = load(broken)
    assert result.returncode != 0 and "health_check" in result.stderr


def spark_image(project: dict, service: str) -> str:
    """The apache/spark image a Spark service's image is built FROM."""
    return project["services"][service]["build"]["args"]["SPARK_IMAGE"]


def test_no_version_key_and_every_image_public_and_pinned(project):
    assert not re.search(r"^version:", COMPOSE.read_text(), re.M)
    for name, service in project["services"].items():
        image = service["image"]
        if "build" in service:
            assert Path(service["build"]["context"]) == BUILT_IMAGES[image], name
            if image != "stedi-spark:local":
                continue
            image = spark_image(project, name)  # its base, a public image
        repository, _, tag = image.rpartition(":")
        assert tag and tag != "latest" and "/" not in tag, image
        assert "." not in repository.split("/")[0], f"{image}: not on Docker Hub"


# Tags checked against the image projects' own repositories (see docs/operations.md, "Docker"):
# apache/spark-docker's versions.json (its newest Spark 4 tags with Python; no 4.2.0 yet),
# and confluentinc/kafka-images' release tag v8.1.1. Confluent Platform 8.x ships Apache Kafka 4.x.
PUBLISHED_SPARK_TAGS = {
    "4.1.2-scala2.13-java17-python3-ubuntu",
    "4.1.2-scala2.13-java21-python3-ubuntu",
}
CONFLUENT_TO_APACHE_KAFKA = {"8.0": "4.0", "8.1": "4.1"}


def image_tag(project: dict, service: str) -> str:
    return project["services"][service]["image"].rpartition(":")[2]


def test_spark_and_kafka_images_are_published_tags_of_the_pinned_versions(project):
    for name in ("spark-master", "spark-worker"):
        repository, _, tag = spark_image(project, name).rpartition(":")
        assert repository == "apache/spark" and tag in PUBLISHED_SPARK_TAGS, name
    for name in ("kafka", "kafka-init"):
        image = project["services"][name]["image"]
        assert image.startswith("confluentinc/cp-kafka:"), name
        minor = ".".join(image_tag(project, name).split(".")[:2])
        assert CONFLUENT_TO_APACHE_KAFKA[minor] == ".".join(
            pom_property("kafka.version").split(".")[:2]
        ), "the broker must run the Apache Kafka minor version that `make up` runs"


def test_the_course_containers_are_named_broker_redis_and_stedi(project):
    services = project["services"]
    containers = {name: service.get("container_name") for name, service in services.items()}
    assert containers["kafka"] == "broker"
    assert containers["redis"] == "redis"
    assert containers["stedi-app"] == "stedi"
    # docker logs -f stedi: the app, with its simulator, runs in the foreground of `stedi`
    assert services["stedi-app"]["command"] == ["python", "-m", "stedi.app"]


def test_the_course_commands_work_inside_the_broker_and_redis(project):
    services = project["services"]
    # docker exec broker kafka-topics --bootstrap-server localhost:9092 --list: the healthcheck
    # runs that very command, so the broker is healthy only if it works.
    course = ["kafka-topics", "--bootstrap-server", "localhost:9092", "--list"]
    assert services["kafka"]["healthcheck"]["test"] == ["CMD", *course]
    environment = services["kafka"]["environment"]
    assert "HOST://:9092" in environment["KAFKA_LISTENERS"]
    assert "HOST://localhost:9092" in environment["KAFKA_ADVERTISED_LISTENERS"]
    # cp-kafka refuses to start in KRaft mode without a cluster id
    assert "controller" in environment["KAFKA_PROCESS_ROLES"] and environment["CLUSTER_ID"]
    assert "kafka-topics --bootstrap-server kafka:19092" in " ".join(
        services["kafka-init"]["command"]
    )
    # docker exec -it redis redis-cli: the official image's redis-cli, on the default port
    assert services["redis"]["image"].startswith("redis:")
    assert "--port" not in services["redis"]["command"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_host_ports_are_the_local_ones_on_loopback(project):
    published = {
        (p["host_ip"], p["published"], p["target"])
        for service in project["services"].values()
        for p in service.get("ports", [])
    }
    assert {("127.0.0.1", "9092", 9092), ("127.0.0.1", "6379", 6379),
            ("127.0.0.1", "4567", 4567)} <= published  # fmt: skip
    assert {ip for ip, _, _ in published} == {"127.0.0.1"}


def test_kafka_redis_the_source_and_the_app_have_healthchecks_and_dependents_wait(project):
    services = project["services"]
    for name in ("kafka", "redis", "redis-source", "stedi-app"):
        assert services[name].get("healthcheck", {}).get("test"), name
    source_check = services["redis-source"]["healthcheck"]["test"]
    assert "stedi.redis_source.health" in " ".join(source_check)
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully"
                if dependency == "kafka-init"
                else "service_healthy"
            )
            assert rule["condition"] == expected, (name, dependency)
            if expected == "service_healthy":
                assert services[dependency].get("healthcheck"), dependency


def test_topics_and_variables_are_the_same_as_local_mode(project):
    defaults = Settings()
    init_script = " ".join(project["services"]["kafka-init"]["command"])
    for topic, configs in stack_topics(defaults).items():
        assert topic in init_script
        for key, value in configs.items():
            assert f"--topic {topic} --config {key}={value}" in init_script
    expected = {
        "STEDI_REDIS_TOPIC": defaults.redis_topic,
        "STEDI_EVENTS_TOPIC": defaults.events_topic,
        "KAFKA_RISK_TOPIC": defaults.risk_topic,
        "STEDI_DEAD_LETTER_TOPIC": defaults.dead_letter_topic,
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:19092",
        "REDIS_HOST": "redis",
    }
    for name in ("stedi-app", "redis-source", "spark-master", "spark-worker"):
        environment = project["services"][name]["environment"]
        assert {k: environment[k] for k in expected} == expected, name
    spark_env = project["services"]["spark-master"]["environment"]
    assert spark_env["STEDI_CHECKPOINT_DIR"].startswith("/opt/spark/work-dir")
    volumes = {v["target"]: v for v in project["services"]["spark-master"]["volumes"]}
    assert volumes["/opt/spark/work-dir"]["type"] == "volume"  # checkpoints survive restarts
    assert volumes["/opt/stedi"]["read_only"] is True  # the repository, mounted


def hadolint(dockerfile: Path) -> None:
    result = subprocess.run([str(HADOLINT), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def last_user(dockerfile: str) -> str:
    return re.findall(r"^USER (\S+)", dockerfile, re.M)[-1].split(":")[0]


def test_the_dockerfile_passes_hadolint_and_runs_as_a_non_root_user():
    hadolint(ROOT / "Dockerfile")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.M)
    assert last_user(dockerfile) not in ("0", "root")


def test_the_spark_image_adds_pinned_pandas_and_pyarrow_to_the_compose_files_spark(project):
    """The score job's state function needs pandas and pyarrow in the Spark containers."""
    hadolint(SPARK_DOCKERFILE)
    dockerfile = SPARK_DOCKERFILE.read_text()
    assert re.findall(r"^FROM (.+)$", dockerfile, re.M) == ["${SPARK_IMAGE}"]
    assert re.findall(r"^ARG (\S+)$", dockerfile, re.M) == ["SPARK_IMAGE"]  # no default tag
    # the image's own `spark` user (uid 185 in apache/spark-docker) runs the containers
    assert last_user(dockerfile) == "185"
    [install] = re.findall(r"pip3 install (.+)$", dockerfile, re.M)
    packages = [word for word in install.split() if not word.startswith("--")]
    assert all(re.fullmatch(r"[a-z]+==\d+(\.\d+)+", p) for p in packages), packages
    assert {p.split("==")[0] for p in packages} >= {"pandas", "pyarrow"}
    assert "--no-cache-dir" in install
    for name in ("spark-master", "spark-worker"):
        assert project["services"][name]["image"] == "stedi-spark:local", name


def test_compose_starts_the_same_services_as_before_the_spark_image(project):
    """Nothing new runs by default: the built Spark image replaced the public one in place
    (compose-go leaves out services of profiles not asked for)."""
    assert sorted(project["services"]) == [
        "kafka", "kafka-init", "redis", "redis-source", "spark-master", "spark-worker", "stedi-app",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster_project() -> dict:
    """The project as `docker compose --profile cluster` loads it."""
    result = subprocess.run(
        [str(COMPOSECHECK), str(COMPOSE)],
        capture_output=True,
        text=True,
        env={**os.environ, "COMPOSE_PROFILES": "cluster"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_cluster_profile_adds_two_brokers_their_replication_and_a_second_worker(
    project, cluster_project
):
    services = cluster_project["services"]
    added = sorted(set(services) - set(project["services"]))
    assert added == ["kafka-2", "kafka-3", "kafka-init-cluster", "spark-worker-2"]
    # The same images as the default stack's, whose tags are checked above.
    for name, like in (("kafka-2", "kafka"), ("kafka-3", "kafka"), ("kafka-init-cluster", "kafka")):
        assert services[name]["image"] == services[like]["image"], name
    assert services["spark-worker-2"]["build"] == services["spark-worker"]["build"]
    assert services["spark-worker-2"]["command"] == services["spark-worker"]["command"]
    brokers = [services[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")]
    assert [b["KAFKA_NODE_ID"] for b in brokers] == ["1", "2", "3"]
    assert len({b["CLUSTER_ID"] for b in brokers}) == 1  # one cluster
    assert {b["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in brokers} == {"1@kafka:9093"}
    for name, port in (("kafka-2", 9094), ("kafka-3", 9096)):
        environment = services[name]["environment"]
        assert environment["KAFKA_PROCESS_ROLES"] == "broker"
        assert f"HOST://localhost:{port}" in environment["KAFKA_ADVERTISED_LISTENERS"]
        assert f"CONTAINER://{name}:19092" in environment["KAFKA_ADVERTISED_LISTENERS"]
        ports = [(p["host_ip"], p["published"], p["target"]) for p in services[name]["ports"]]
        assert ports == [("127.0.0.1", str(port), port)]
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    init = " ".join(services["kafka-init-cluster"]["command"])
    for topic in stack_topics(Settings()):
        assert topic in init.split("topics=", 1)[1].split("\n", 1)[0], topic
    assert "[1,2,3]" in init and "--add-config min.insync.replicas=2" in init
    assert set(services["kafka-init-cluster"]["depends_on"]) == {"kafka-init", "kafka-2", "kafka-3"}


def test_the_image_line_test_installs_the_spark_and_pins_of_the_spark_containers(project):
    """tests/integration/test_image_spark.py runs the jobs on what these files name."""
    version = spark_image(project, "spark-master").split(":")[1].split("-")[0]
    assert image_spark.image_spark_version(COMPOSE.read_text()) == version
    pins = image_spark.image_python_pins(SPARK_DOCKERFILE.read_text())
    [install] = re.findall(r"pip3 install (.+)$", SPARK_DOCKERFILE.read_text(), re.M)
    assert pins == [word for word in install.split() if not word.startswith("--")]


def test_the_image_installs_exactly_the_pyproject_dependencies():
    """One `pip install .` (pyproject.toml's pins) and no other Python package."""
    installs = re.findall(r"pip install ([^\n&]+)", (ROOT / "Dockerfile").read_text())
    assert [i.strip() for i in installs] == ["."]


@pytest.fixture
def fake_tools(tmp_path):
    """A stand-in `docker` (and spark-submit) on PATH that record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "calls"
    script = (
        "#!/usr/bin/env bash\n"
        f'echo "$(basename "$0") $*" >> {record}\n'
        'if [[ "$*" == *" ps "* ]]; then echo "${FAKE_COMPOSE_SERVICES:-}" | tr , "\\n"; fi\n'
    )
    for name in ("docker", "spark-submit"):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SPARK_SUBMIT": str(bin_dir / "spark-submit")}  # fmt: skip
    return env, record


def run_wrapper(env, *args, wrapper="submit-join.sh"):
    result = subprocess.run([str(ROOT / wrapper), *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


WRAPPERS = {
    "submit-redis.sh": "sparkpyrediskafkastreamtoconsole.py",
    "submit-event.sh": "sparkpyeventskafkastreamtoconsole.py",
    "submit-join.sh": "sparkpykafkajoin.py",
    "submit-score.sh": "sparkpyriskscore.py",
}


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_wrappers_submit_inside_spark_master_when_the_compose_stack_runs(
    fake_tools, project, wrapper
):
    env, record = fake_tools
    running = {**env, "FAKE_COMPOSE_SERVICES": "kafka,redis,spark-master"}
    run_wrapper(running, "--available-now", wrapper=wrapper)
    submit = record.read_text().splitlines()[-1]
    assert submit.startswith("docker compose -f ")
    assert " exec -T spark-master /opt/spark/bin/spark-submit " in submit
    assert " --master spark://spark-master:7077 " in submit
    # the connector of the image's Spark, which may trail pyspark's pin
    version = spark_image(project, "spark-master").split(":")[1].split("-")[0]
    assert f" --packages org.apache.spark:spark-sql-kafka-0-10_2.13:{version} " in submit
    assert " --conf spark.jars.ivy=/tmp/.ivy2 " in submit
    assert submit.endswith(f" /opt/stedi/{WRAPPERS[wrapper]} --available-now")


def test_wrappers_submit_locally_when_the_compose_stack_is_not_running(fake_tools, tmp_path):
    env, record = fake_tools
    stack_dir = tmp_path / "stack"
    local = {**env, "FAKE_COMPOSE_SERVICES": "kafka,redis", "STEDI_STACK_DIR": str(stack_dir)}
    run_wrapper(local, "--available-now")
    submit = record.read_text().splitlines()[-1]
    assert submit.startswith("spark-submit --master local[*] --jars ")
    assert "spark-sql-kafka-0-10_2.13" in submit
    assert submit.endswith(f"{ROOT}/sparkpykafkajoin.py --available-now")
    # the driver runs on a UI port of its own, announced for the status panel
    port = re.search(r" --conf spark\.ui\.port=(\d+) ", submit).group(1)
    announced = json.loads((stack_dir / "drivers" / "sparkpykafkajoin.json").read_text())
    assert announced["ui"] == f"http://127.0.0.1:{port}"
    assert announced["script"] == "sparkpykafkajoin.py" and announced["pid"] > 0
    run_wrapper({**env, "FAKE_COMPOSE_SERVICES": "spark-master", "STEDI_SUBMIT": "local"})
    assert record.read_text().splitlines()[-1].startswith("spark-submit ")
