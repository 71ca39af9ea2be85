"""``python -m ioi.course``: build, check or execute the course (see `ioi.course.build`)."""

import sys

from ioi.course.build import main

sys.exit(main())
