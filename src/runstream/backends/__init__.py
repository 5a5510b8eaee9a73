"""Backends: the transport contract over a Redis list and over Redis Streams."""
