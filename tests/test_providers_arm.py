"""device="arm" off an ARM machine: a clear refusal without fallback, CPU with a warning with it."""
from __future__ import annotations

import platform

import pytest

from edgelstm.errors import ProviderUnavailableError
from edgelstm.runtime import providers


@pytest.mark.skipif(providers.is_arm_machine(), reason="this machine is ARM: the arm device is usable here")
def test_arm_without_fallback_names_the_machine():
    with pytest.raises(ProviderUnavailableError,
                       match=rf"no ARM execution path here.*got {platform.machine()} with providers"):
        providers.plan_providers("arm", fallback=False)


@pytest.mark.skipif(providers.is_arm_machine(), reason="this machine is ARM: the arm device is usable here")
def test_arm_with_fallback_warns_and_runs_on_cpu():
    with pytest.warns(RuntimeWarning, match="not available"):
        plan = providers.plan_providers("arm", fallback=True)
    assert plan.providers == ["CPUExecutionProvider"] and plan.fell_back
