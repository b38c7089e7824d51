"""``python -m qmill.server.openapi --write | --check``: regenerate or check openapi.json."""

import sys

from qmill.server.openapi import main

sys.exit(main())
