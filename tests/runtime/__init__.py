"""The runtime layer: launchd plists and systemd units rendered from the repo's templates, and the
scripts in scripts/runtime/ that install, inspect, restart, reload and check them.

Nothing is installed: every script runs with HOME and TMPDIR inside the test's folder, and a fake
``launchctl``/``systemctl`` first on PATH records any call so the dry runs can prove they made none.
"""
