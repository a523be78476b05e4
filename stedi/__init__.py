"""STEDI balance-risk pipeline.

Keep this file free of imports: the Spark entry scripts import `stedi.config`,
`stedi.schemas`, `stedi.transforms` and `stedi.sparkjob`, which need nothing but
pyspark and the standard library (in the Spark container nothing else is installed).
"""
