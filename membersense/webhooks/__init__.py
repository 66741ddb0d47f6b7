"""Outgoing webhooks: the session guild's events, signed and POSTed to a receiver's URL.

- :mod:`~membersense.webhooks.service`: :class:`~membersense.webhooks.service.Webhooks`,
  registration and the hand-off of published events to the deliverer (who
  delivers: the process that publishes the event).
- :mod:`~membersense.webhooks.store`: subscription records and the store
  interface; :mod:`~membersense.webhooks.memory`: the process-local store.
- :mod:`~membersense.webhooks.delivery`: outboxes, tries, backoff, disabling.
- :mod:`~membersense.webhooks.recent`: the events published lately, which a webhook the
  delivering process hears of late begins with.
- :mod:`~membersense.webhooks.addresses`: the SSRF guard.
- :mod:`~membersense.webhooks.signing`: signatures, and how receivers check them.
"""
