r"""pytest entry point of the VMX unit's cocotb tests (tb/test_vmx_unit.py).

One Verilator model of `VmxUnit()` (built once by sim.flow, cached under build/), several cocotb
runs against it; every step is compared with `tb.model.vmx.VmxModel`.

    .venv/bin/python -m pytest -q tests/test_vmx_rtl.py
    VTX_SEED=7 VTX_VMX_OPS=20000 .venv/bin/python -m pytest -q tests/test_vmx_rtl.py -k random
    WAVES=1 .venv/bin/python -m pytest tests/test_vmx_rtl.py -k cache        # build/waves/
"""

from __future__ import annotations

import os

import pytest

from rtl.vmx.unit import VmxUnit

FACTORY = VmxUnit
TOPLEVEL = "vmx_unit"

RANDOM_PARTS = 2


def build_model(waves=None):
    from sim import flow

    verilog = flow.generate_verilog(FACTORY, TOPLEVEL, {})
    return flow.build_verilator(verilog, TOPLEVEL, waves=waves)


def run(testcase, extra_env=None):
    from sim import flow

    return flow.run_cocotb("tb.test_vmx_unit", TOPLEVEL, build_model(), testcase=testcase,
                           extra_env=dict(extra_env or {}))


@pytest.fixture(scope="session")
def model():
    return build_model()


DIRECTED = ["instruction_errors", "must_rows", "cache_behaviour", "back_to_back", "round_trip",
            "vmread_during_write_back", "entry_checks", "non_root", "msr_port"]


@pytest.mark.parametrize("test", DIRECTED)
def test_directed(model, test):
    run(test)


@pytest.mark.parametrize("part", range(RANDOM_PARTS))
def test_random_differential(model, part):
    seed = int(os.environ.get("VTX_SEED", "1")) + part
    ops = -(-int(os.environ.get("VTX_VMX_OPS", "4000")) // RANDOM_PARTS)
    run("random_differential", {"VTX_SEED": str(seed), "VTX_VMX_OPS": str(ops)})
