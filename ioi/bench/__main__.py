"""``python -m ioi.bench patching|path|discovery [options]`` (see `ioi.bench`)."""

import sys

from ioi.bench import main

sys.exit(main())
