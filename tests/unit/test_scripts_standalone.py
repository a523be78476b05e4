"""The entry scripts are standalone, and the code they copy from each other stays identical."""

import ast
import functools
import sys

import pytest

from stedi.stack.services import ROOT

REDIS, EVENTS, JOIN, SCORE = (
    "sparkpyrediskafkastreamtoconsole.py",
    "sparkpyeventskafkastreamtoconsole.py",
    "sparkpykafkajoin.py",
    "sparkpyriskscore.py",
)
SCRIPTS = [REDIS, EVENTS, JOIN]  # the three entry scripts, which have no Python UDFs
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


@functools.cache  # one parse per script for the whole run, not one per parameter
def top_level_definitions(path) -> dict[str, str]:
    """The source text of each top-level function, class and constant, by name."""
    source = path.read_text()
    definitions = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            definitions[node.name] = ast.get_source_segment(source, node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                definitions[target.id] = ast.get_source_segment(source, node)
    return definitions


# Each script carries its own copy (they stand alone); these copies must stay one text.
# sparkpyriskscore.py's run loop is its own (it also sums the agreement), so it is not here.
COPIES = {
    (REDIS, EVENTS, JOIN, SCORE): [
        "_env",
        "_text",
        "_is_email",
        "EMAIL_PATTERN",
        "starting_offsets_for",
        "CHECKPOINT_FILE_MANAGER",
        "PROGRESS_POLL_S",
    ],
    (REDIS, EVENTS, JOIN): ["_is_json_object", "run", "print_new_batches"],
    (REDIS, JOIN, SCORE): ["REDIS_RECORD_SCHEMA", "ZSET_ENTRY_SCHEMA"],
    (EVENTS, JOIN, SCORE): ["RISK_EVENT_SCHEMA"],
    (REDIS, JOIN): ["CUSTOMER_KEY", "CUSTOMER_SCHEMA", "_base64_text", "customer_members"],
    (EVENTS, JOIN): ["ISO_INSTANT_PATTERN", "_is_finite", "risk_events"],
    (REDIS, EVENTS): ["build_session", "read_kafka", "progress_line", "start", "main"],
    (JOIN, SCORE): [
        "STATE_STORES",
        "DEAD_LETTER_VALUE_BYTES",
        "RISK_DATE_FORMAT",
        "read_kafka",
        "kafka_timeouts",
        "kafka_sink_timeouts",
    ],
}
COPIED = [(scripts, name) for scripts, names in COPIES.items() for name in names]


@pytest.mark.parametrize(
    ("scripts", "name"),
    COPIED,
    ids=[f"{name}-in-{len(scripts)}-scripts" for scripts, name in COPIED],
)
def test_a_copied_definition_is_the_same_text_in_every_script_that_carries_it(scripts, name):
    texts = {script: top_level_definitions(ROOT / script).get(name) for script in scripts}
    assert None not in texts.values(), f"{name} is missing from {texts}"
    first = texts[scripts[0]]
    differing = [script for script, text in texts.items() if text != first]
    assert not differing, f"{name} differs from {scripts[0]}'s copy in {differing}"


@functools.cache
def preceding_comments(path) -> dict[str, str]:
    """The comment line right above each top-level definition (above its decorators)."""
    source = path.read_text()
    lines = source.splitlines()
    comments = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else node
        name = getattr(target, "name", None) or getattr(target, "id", None)
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        if name and first >= 2:
            comments[name] = lines[first - 2]
    return comments


@pytest.mark.parametrize(
    ("scripts", "name"),
    COPIED,
    ids=[f"{name}-in-{len(scripts)}-scripts" for scripts, name in COPIED],
)
def test_a_copied_definition_says_which_test_keeps_it_equal(scripts, name):
    for script in scripts:
        comment = preceding_comments(ROOT / script).get(name, "")
        assert comment.startswith("# A copy, as in the "), f"{name} in {script}"
        assert comment.endswith("tests/unit/test_scripts_standalone.py keeps them equal.")
