"""`python -m tfx_transfer.cli`, as the `tfx-transfer` command."""

import sys

from tfx_transfer.cli import main

sys.exit(main())
