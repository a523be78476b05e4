"""The entry scripts are classic standalone Structured Streaming scripts: pyspark and the
standard library only, their own Kafka read and schemas, and the flow on one screen."""

import ast
import re
import sys

import pytest

from stedi.stack.services import ROOT

REDIS, EVENTS, JOIN, SCORE = (
    "sparkpyrediskafkastreamtoconsole.py",
    "sparkpyeventskafkastreamtoconsole.py",
    "sparkpykafkajoin.py",
    "sparkpyriskscore.py",
)
SCRIPTS = [REDIS, EVENTS, JOIN, SCORE]
# The score job's state function is the one Python function Spark calls per row.
FORBIDDEN_CALLS = {"udf", "pandas_udf", "applyInPandas", "mapInPandas", "applyInPandasWithState"}


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module.split(".")[0]


def functions(path) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_imports_only_pyspark_and_the_standard_library(script):
    modules = set(imported_modules(ROOT / script)) - {"__future__"}
    # pandas only inside the score's state function, on the Python workers
    assert modules - set(sys.stdlib_module_names) <= {"pyspark", "pandas"}
    assert "pandas" not in modules or script == SCORE


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_has_its_own_kafka_read_and_schemas_and_no_python_udfs(script):
    source = (ROOT / script).read_text()
    assert 'spark.readStream.format("kafka")' in source
    assert "StructType(" in source
    tree = ast.parse(source)
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    allowed = {"applyInPandasWithState"} if script == SCORE else set()
    assert not names & FORBIDDEN_CALLS - allowed
    assert "spark-sql-kafka-0-10_2.13:4.2.0 " + script in source


@pytest.mark.parametrize("script", SCRIPTS)
def test_main_starts_the_query_and_awaits_its_end_with_read_and_write_close_together(script):
    """main: the session, `start_query` (readStream, the transformations, writeStream),
    awaitTermination; and the whole flow of `start_query` fits on one screen."""
    found = functions(ROOT / script)
    main = ast.unparse(found["main"])
    assert "SparkSession.builder" in main and "start_query(spark" in main
    assert main.rstrip().endswith(".awaitTermination()")
    lines = ast.get_source_segment((ROOT / script).read_text(), found["start_query"]).splitlines()
    read = next(i for i, line in enumerate(lines) if "spark.readStream" in line)
    write = next(i for i, line in enumerate(lines) if ".writeStream" in line)
    assert 0 < write - read <= 60


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_comment_carries_a_measurement(script):
    """Measurements belong in docs/performance.md: comments say why."""
    figure = re.compile(r"\d[\d,.]*\s*(ms|s|cores?|MiB|GiB|%)\b")
    comments = [
        line
        for line in (ROOT / script).read_text().splitlines()
        if line.lstrip().startswith("#") and figure.search(line)
    ]
    assert comments == []


@pytest.mark.parametrize(
    ("console", "name"), [(REDIS, "customer_members"), (EVENTS, "risk_events")]
)
def test_a_console_shows_what_the_join_decodes(console, name):
    """The consoles carry the join's decoder (tested once, in test_customers.py and
    test_risk_events.py), so what they show as good is what the join joins."""
    texts = [ast.unparse(functions(ROOT / script)[name]) for script in (console, JOIN)]
    assert texts[0] == texts[1]
