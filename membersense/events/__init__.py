"""Live events for clients: Server-Sent Events streams, long-polls and stream tickets.

- :mod:`~membersense.events.live`: :class:`~membersense.events.live.LiveEvents`,
  streams and long-polls over the event bus under one per-process cap, ended
  with their session.
- :mod:`~membersense.events.tickets`: one-time tickets that open a stream
  without a session id in the URL.

The outgoing webhooks, which deliver the same events, are :mod:`membersense.webhooks`.
"""
