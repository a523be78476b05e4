"""`make bench`: the project's join against the common course approach and Kafka's own limit."""
