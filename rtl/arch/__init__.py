"""Architectural constants: the one source of truth for the RTL, the reference model and the tests.

* `rtl.arch.paging`: IA-32e paging and EPT (what the translation unit needs);
* `rtl.arch.vmx`: VMX instructions, VMCS fields and region layout, controls, capability MSRs,
  exit reasons and qualifications (what the VMX unit needs).

Everything is re-exported here, so ``from rtl.arch import X`` works for both.
"""

from . import paging, vmx
from .paging import *  # noqa: F403
from .vmx import *  # noqa: F403

__all__ = [*paging.__all__, *vmx.__all__]

assert not set(paging.__all__) & set(vmx.__all__), "a name is defined by two arch modules"
