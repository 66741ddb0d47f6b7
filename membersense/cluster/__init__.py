"""Redis mode: any number of processes and instances, one gateway connection per bot.

With ``REDIS_URL`` set, what memory mode keeps in one process lives in Redis
instead, so that every process can serve every session:

- ``connection.py``: the connection, key names (``REDIS_KEY_PREFIX`` plus a schema
  version) and the circuit that turns Redis trouble into a quick 503;
- ``sealing.py``: bot tokens encrypted with a key derived from ``SESSION_SECRET``;
- ``sessions.py``: the session store (TTL'd records, caps checked in Lua, a
  per-process cache invalidated through pub/sub);
- ``bus.py``: the event bus as one Redis Stream per topic;
- ``leases.py``: which process owns a bot's gateway connection (a fenced lease);
- ``views.py``: the owner publishes its bots' state; everyone reads a local copy
  revalidated by version;
- ``guards.py``: the invalid-request budget and refused-token memory, shared;
- ``service.py``: the Discord service of Redis mode, tying these together;
- ``notices.py``: the pub/sub listener (session ends, lease releases).

Memory mode never imports this package.
"""
