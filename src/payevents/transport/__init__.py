"""Transports: the embedded SQLite log (default) and Kafka."""

from payevents.transport.base import Consumer, Delivery, Message, Producer, Record, TopicInfo, Transport

__all__ = ["Consumer", "Delivery", "Message", "Producer", "Record", "TopicInfo", "Transport"]
