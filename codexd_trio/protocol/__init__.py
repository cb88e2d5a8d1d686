"""The app-server protocol: a sans-IO JSON-RPC connection (:mod:`.jsonrpc`) and the Trio client
(:mod:`.appserver`) that pumps it over the child's stdio."""
