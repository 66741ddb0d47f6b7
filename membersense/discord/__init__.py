"""The Discord layer: everything that talks to Discord, and nothing of HTTP.

- ``service.py``: the :class:`~.service.DiscordService` protocol the rest of
  MemberSense uses, and its values.
- ``local.py``: its implementation with discord.py on one event loop thread
  (:class:`~membersense.bridge.Bridge`): ``pool.py`` (one connection per bot,
  kept while it has sessions), ``connection.py`` (one bot's gateway
  connection: ``lifecycle.py``, ``members.py``, ``translate.py``,
  ``published.py``, ``snapshot.py``), ``rest.py`` (bounded calls, errors) and
  ``invalid_requests.py`` (staying out of Discord's IP ban).
- ``errors.py``: the layer's own exceptions; ``compat.py``: every use of
  discord.py's internals; ``serializers.py``: Discord objects → our JSON;
  ``outgoing.py``: the bodies of the messages MemberSense sends;
  ``tokens.py``: token fingerprints.

Nothing here imports Flask or the web layer.
"""
