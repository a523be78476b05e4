"""The STEDI application: web app (login, customers, rapid step tests, risk graph) and simulator.

Run with `python -m stedi.app` (make run starts it). Never imported by the Spark jobs.
"""
