"""The system around the core (docs/system.md): `Soc` (soc.py), `SystemUnit` (system_unit.py),
`SystemMemory` (memory.py). Constants: `rtl.arch.system`."""

from .soc import FAULT_LAYOUT, SOC_TRANSLATION, RunStop, Soc

__all__ = ["Soc", "RunStop", "FAULT_LAYOUT", "SOC_TRANSLATION"]
