"""The three entry scripts are standalone, and their copied decoders stay identical."""

import ast
import inspect
import sys

import pytest

from stedi.stack.services import ROOT
from tests.scripts import events_job, join_job, redis_job

SCRIPTS = [
    "sparkpyrediskafkastreamtoconsole.py",
    "sparkpyeventskafkastreamtoconsole.py",
    "sparkpykafkajoin.py",
]
FORBIDDEN_CALLS = {"udf", "pandas_udf", "applyInPandas", "mapInPandas", "applyInPandasWithState"}


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module.split(".")[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_imports_only_pyspark_and_the_standard_library(script):
    modules = set(imported_modules(ROOT / script))
    assert modules - sys.stdlib_module_names - {"__future__"} == {"pyspark"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_has_its_own_kafka_read_and_schemas_and_no_python_udfs(script):
    source = (ROOT / script).read_text()
    assert 'spark.readStream.format("kafka")' in source
    assert "StructType(" in source
    names = {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    assert not names & FORBIDDEN_CALLS
    assert "spark-sql-kafka-0-10_2.13:4.2.0 " + script in source


@pytest.mark.parametrize(
    ("copy", "names"),
    [
        (redis_job, ["customer_members", "_text", "_base64_text", "_is_json_object", "_is_email"]),
        (events_job, ["risk_events", "_text", "_is_json_object", "_is_email", "_is_finite"]),
    ],
    ids=["redis-script", "events-script"],
)
def test_the_join_script_decodes_with_the_same_code_as_the_console_script(copy, names):
    for name in names:
        assert inspect.getsource(getattr(copy, name)) == inspect.getsource(
            getattr(join_job, name)
        ), name
    for schema in ("REDIS_RECORD_SCHEMA", "CUSTOMER_SCHEMA", "RISK_EVENT_SCHEMA", "EMAIL_PATTERN"):
        if hasattr(copy, schema):
            assert getattr(copy, schema) == getattr(join_job, schema), schema
