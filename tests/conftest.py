"""Shared pytest configuration. Fixtures that several test modules need live in
``codexd_trio.testing.fixtures`` (a pytest plugin) so they are importable and typed."""

pytest_plugins = ["codexd_trio.testing.fixtures"]
