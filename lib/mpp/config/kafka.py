"""Kafka settings: the brokers, the client's security, and the platform's topics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

# The logging.Logger that receives librdkafka's log lines (every client's ``logger``).
KAFKA_LOGGER = "librdkafka"


class Topics(BaseModel):
    """Kafka topic names; every value is a message from proto/mpp/v1 (see events.proto)."""

    raw: str = "conversations.raw"
    validated: str = "conversations.validated"
    enriched: str = "conversations.enriched"
    dlq: str = "conversations.dlq"
    feedback: str = "feedback.events"
    erasure: str = "users.erasure"
    partitions: Annotated[int, Field(ge=1)] = 3
    replication_factor: Annotated[int, Field(ge=1)] = 1

    def all(self) -> list[str]:
        return [self.raw, self.validated, self.enriched, self.dlq, self.feedback, self.erasure]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    client_id: str = "mpp"
    # Consumer groups are "<group_prefix>-<service>"; a second deployment on the same cluster
    # (or a test run) uses its own prefix.
    group_prefix: str = "mpp"
    topics: Topics = Topics()
    # Largest dead letter (its key and value, in bytes) a service produces: a record near the
    # topics' size limit is kept as a prefix with its full size and SHA-256 (``mpp.deadletters``).
    # Below librdkafka's message.max.bytes (1,000,000) and the broker's (1,048,588), with room
    # for the record batch's own overhead.
    dead_letter_max_bytes: Annotated[int, Field(ge=16_384)] = 900_000
    # retention.ms of every platform topic, set at creation and enforced on existing topics by
    # ``mpp.kafka.ensure_topics``: the erasure deadline for Kafka (docs/security.md). A user's
    # records, DLQ copies included, are unreadable at most this long after they were produced.
    retention_ms: Annotated[int, Field(ge=1000)] = 86_400_000

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(
                f"kafka.security_protocol={self.security_protocol} needs kafka.sasl_mechanism: "
                "set MPP_KAFKA__SASL_MECHANISM (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
            )
        if self.sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"kafka.sasl_mechanism={self.sasl_mechanism} needs a username and password: "
                "set MPP_KAFKA__SASL_USERNAME and MPP_KAFKA__SASL_PASSWORD"
            )
        return self

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and the admin client.

        ``logger`` hands librdkafka's own log lines to the ``logging`` module (``mpp.logs``
        renders them as JSON) instead of its plain lines on stderr."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
            "logger": logging.getLogger(KAFKA_LOGGER),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        return conf
