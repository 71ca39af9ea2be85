"""``python -m ioi.features train [--out DIR] [--prompts N] [--steps N] [--seed S]``: retrain the
toy model's shipped SAEs; ``python -m ioi.features quality [--prompts N] [--seed S]``: their
quality table."""

from __future__ import annotations

import sys

from ioi.features import quality, train

COMMANDS = {"train": train.main, "quality": quality.main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
