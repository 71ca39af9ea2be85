"""Course tooling: the build that turns ``course/NN_slug.py`` into exercises, solutions, notebooks.

Run it as ``python -m ioi.course`` (``--check``, ``--execute``); the code is `ioi.course.build`.
The graded checkers the course calls are `ioi.checks`.
"""
