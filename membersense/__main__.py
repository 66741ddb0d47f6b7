"""``python -m membersense``: the same as the ``membersense`` command."""

import sys

from membersense.cli import main

sys.exit(main())
