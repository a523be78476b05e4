"""Variable names of the original STEDI app that this project honours too."""

from stedi.config import Settings


def test_kafka_broker_alone_sets_the_kafka_address(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KAFKA_BROKER", "broker:29092")
    assert Settings().kafka_bootstrap_servers == "broker:29092"


def test_kafka_bootstrap_servers_wins_when_both_are_set(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:19092")
    monkeypatch.setenv("KAFKA_BROKER", "broker:29092")
    assert Settings().kafka_bootstrap_servers == "kafka:19092"


def test_without_either_the_default_is_localhost_9092(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("KAFKA_BROKER", raising=False)
    assert Settings().kafka_bootstrap_servers == "localhost:9092"
