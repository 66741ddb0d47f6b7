"""``python -m membersense.sandbox ARGS`` runs the sandbox (same flags as ``membersense sandbox``)."""

from __future__ import annotations

from membersense.sandbox.cli import main

raise SystemExit(main())
