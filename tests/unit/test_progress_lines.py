"""The drivers' progress lines (jvm/driver's ProgressLines listener, which bin/submit and the
tests' session register): one line per micro-batch, in the format the bench parses. (The
wrappers' lines themselves are checked in tests/integration/test_spark_jobs.py.)"""

import re

from pyspark.sql import functions as F

from bench.progress import parse_line

LISTENER = "io.stedi.spark.ProgressLines"


def test_the_session_has_the_listener(spark):
    assert spark.conf.get("spark.sql.streaming.streamingQueryListeners") == LISTENER


def test_a_batch_line_has_its_figures_and_observed_counts_but_no_underscored_one(spark, tmp_path):
    folder = str(tmp_path / "in")
    spark.range(3).write.parquet(folder)
    checked = (
        spark.readStream.schema("id long")
        .parquet(folder)
        .observe(
            "checks",
            F.count_if(F.col("id") > 0).alias("dead_letters"),
            F.max("id").alias("_guard"),  # a leading underscore: not shown
            F.count("id").alias("rows_seen"),
        )
    )
    query = (
        checked.writeStream.format("noop")
        .queryName("progress-line-test")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    line = spark._jvm.io.stedi.spark.ProgressLines.line(query._jsq.lastProgress())
    assert re.fullmatch(
        r"\[progress-line-test\] batch 0: 3 rows in, [\d.]+ rows/s, \d+ ms, 0 state rows, "
        r"2 dead letters, 3 rows seen",
        line,
    ), line
    batch = parse_line(line)  # the bench reads it
    assert (batch.query, batch.batch, batch.rows, batch.state_rows) == (
        "progress-line-test",
        0,
        3,
        0,
    )
