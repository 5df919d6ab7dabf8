"""Errors for records that cannot be decided.

Each carries the class name that goes into the DLQ's ``error.class`` header, so
operators can filter the DLQ by cause without parsing messages.
"""

from __future__ import annotations


class RecordError(Exception):
    """A record that cannot be decided; it goes to the DLQ with this message."""


class OversizeError(RecordError):
    """The record exceeds a configured size bound."""


class DecodeError(RecordError):
    """The bytes are not one JSON object in valid UTF-8."""


class ValidationError(RecordError):
    """The JSON is well formed but breaks the event schema in DESIGN.md."""
