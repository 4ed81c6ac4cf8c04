"""The operator's tool for the Debezium connector: templates rendered from settings, the Kafka
Connect REST client, and replication-slot cleanup."""

from connectors.client import ConnectClient
from connectors.config import load, masked
from connectors.errors import ConnectorError
from connectors.slots import drop as drop_slot_and_publication

__all__ = ["ConnectClient", "ConnectorError", "drop_slot_and_publication", "load", "masked"]
