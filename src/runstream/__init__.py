"""runstream: stream LangGraph job output through Redis to Server-Sent Events clients."""

__version__ = "0.1.0"
