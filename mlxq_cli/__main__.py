"""``python -m mlxq_cli``: the same as the ``mlxq`` command."""

import sys

from mlxq_cli import main

sys.exit(main())
