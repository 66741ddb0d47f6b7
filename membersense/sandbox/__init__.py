"""The MemberSense Discord sandbox: a local, wire-compatible Discord (REST v10, gateway, control API).

Start it with ``membersense sandbox`` (see :mod:`membersense.sandbox.cli`) or, in tests,
with :class:`membersense.sandbox.server.SandboxServer`.  Importing this package starts nothing.
"""
