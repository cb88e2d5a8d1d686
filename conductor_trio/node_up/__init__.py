"""``python -m conductor_trio.node_up`` (what ``scripts/up.sh`` runs): bring a whole node up in
the foreground — codexd, conductor and status-api.

This is the developer's and newcomer's path; production runs each daemon under launchd or
systemd (``docs/runtime/``). Each daemon is started as its own process, exactly as the service
manager would start it, and found through the JSON "ready" line it prints (no sleeps). With
``--demo`` a scripted model (``python -m codexd_trio.testing``) and a throw-away Codex home are
started first, and one real turn is run through the conductor, so a newcomer sees Codex answer
without an OpenAI login. Ctrl-C (or SIGTERM) stops everything, each process group by its id.

It never harms a node that is already running: before it writes anything it checks that no other
``up`` holds the var dir's lock (``<var>/up.lock``, an ``flock`` held for the node's lifetime) and
that the ports are free, and says in one line (exit 2) how to reach or stop the running node.

:mod:`.preflight` holds those checks and imports only the standard library at module level:
``scripts/up.sh`` checks its arguments with :func:`check_arguments` and the system Python before
it installs anything. :mod:`.run` starts the node; the daemons' libraries (Trio, httpx) are
imported where the node is run. It lives in the conductor's package because it starts the
conductor and reads its mode and shared token: codexd's package never imports the conductor's.
"""

from conductor_trio.node_up.preflight import check_arguments

__all__ = ["check_arguments"]
