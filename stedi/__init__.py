"""STEDI balance-risk pipeline: the STEDI app, the Redis source and the local stack.

The Spark jobs are the three standalone `sparkpy*.py` scripts at the repository
root; they import nothing from this package.
"""
