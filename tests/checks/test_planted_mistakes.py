"""Every diagnosis a checker can make fires on a planted mistake of its kind.

Each ``planted_<section>.py`` maps (exercise, diagnosis) to a wrong implementation written to
make exactly that mistake. The checker must fail it with that diagnosis, and its message must
carry the call, the expected and returned values, the diagnosis and a hint.
"""

from __future__ import annotations

import pytest

import ioi.checks as checks
from tests.checks import (
    planted_activation_patching,
    planted_further,
    planted_logit_attribution,
    planted_model_and_task,
    planted_path_patching,
    planted_replication,
)

PLANTED = {
    **planted_model_and_task.PLANTED,
    **planted_logit_attribution.PLANTED,
    **planted_activation_patching.PLANTED,
    **planted_path_patching.PLANTED,
    **planted_replication.PLANTED,
    **planted_further.PLANTED,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("exercise", "diagnosis"), sorted(PLANTED), ids=[f"{e}-{d}" for e, d in sorted(PLANTED)]
)
def test_planted_mistake_is_diagnosed(exercise: str, diagnosis: str) -> None:
    with pytest.raises(checks.CheckFailed) as failure:
        checks.checker_for(exercise)(PLANTED[exercise, diagnosis])
    message = str(failure.value)
    assert failure.value.diagnosis == diagnosis, message
    for part in ("call:", "expected:", "got:", f"diagnosis: {diagnosis}:", "hint:"):
        assert part in message, f"{part!r} missing from:\n{message}"


def test_every_declared_diagnosis_is_planted() -> None:
    declared = {
        (name, key) for name, exercise in checks.registry().items() for key in exercise.diagnoses
    }
    missing = sorted(declared - set(PLANTED))
    assert not missing, f"diagnoses no planted mistake triggers: {missing}"
    assert not set(PLANTED) - declared, sorted(set(PLANTED) - declared)
