"""conductor and status-api: the node's local API over codexd."""

__version__ = "0.1.0"
