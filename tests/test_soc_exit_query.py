"""`rtl.soc.exit_query.ExitQuery` in Amaranth's simulator against the SDM's exit rules.

Random requests (`VTX_EXIT_QUERY_CASES`, default 2000) of every kind the system unit asks about
(faults, EPT faults, and the instructions that may exit: CPUID, HLT, RDTSC, INVLPG, RDMSR,
WRMSR, MOV from/to CR, IN/OUT with an immediate or DX port) with random operands. The block's
query is read back as the call of `tb.model.vmx.VmxModel` it stands for (`instruction_exit`,
`msr_exit`, `cr_access_exit`, `io_exit`, `exception_exit`, `ept_exit` and their arguments) and
compared with the call written here from the SDM (Vol. 3C 26.1-26.2, 27.2.1): which rule, and
with which operands (the qualification of a #PF is CR2, of INVLPG its linear address).
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.paging import Outcome
from rtl.arch.vmx import ExitReason, InterruptionType
from rtl.core.core_layouts import VECTOR_PF, NeedsUnit, SysKind
from rtl.core.layouts import InsnClass
from rtl.soc.exit_query import ExitQuery
from rtl.vmx.exit_decisions import CrAccessType, ExitQueryKind

SEED = int(os.environ.get("VTX_SEED", "1"))
CASES = int(os.environ.get("VTX_EXIT_QUERY_CASES", "2000"))

INSTRUCTIONS = {InsnClass.CPUID: ExitReason.CPUID, InsnClass.HLT: ExitReason.HLT,
                InsnClass.RDTSC: ExitReason.RDTSC, InsnClass.INVLPG: ExitReason.INVLPG}
IO = {InsnClass.IN_IMM: (True, True), InsnClass.IN_DX: (True, False),
      InsnClass.OUT_IMM: (False, True), InsnClass.OUT_DX: (False, False)}
CLASSES = [*INSTRUCTIONS, InsnClass.RDMSR, InsnClass.WRMSR, InsnClass.MOV_FROM_CR,
           InsnClass.MOV_TO_CR, *IO]


def _case(rng):
    kind = SysKind.FAULT if rng.random() < 0.3 else SysKind.INSN
    return {
        "kind": kind, "cls": rng.choice(CLASSES), "reg": rng.getrandbits(4),
        "rm": rng.getrandbits(4), "ea": rng.getrandbits(64),
        "unit": rng.choice([NeedsUnit.VMX, NeedsUnit.NONE]),
        "vector": rng.choice([0, 6, 12, 13, VECTOR_PF, rng.getrandbits(8)]),
        "has_error_code": rng.getrandbits(1), "error_code": rng.getrandbits(32),
        "addr": rng.getrandbits(64),
        "outcome": rng.choice([Outcome.EPT_VIOLATION, Outcome.EPT_MISCONFIG]),
        "fault_qualification": rng.getrandbits(64), "fault_gpa": rng.getrandbits(64),
        "fault_gla": rng.getrandbits(64), "msr": rng.getrandbits(32),
        "rm_value": rng.getrandbits(64), "cr_value": rng.getrandbits(64),
        "port": rng.getrandbits(16), "io_bytes": rng.choice([1, 2, 4]),
    }


def _expected(c):
    """The model call the request stands for, from the SDM."""
    if c["kind"] is SysKind.FAULT:
        if c["unit"] is NeedsUnit.VMX:     # an EPT violation or misconfiguration
            return ("ept_exit", c["outcome"], c["fault_qualification"], c["fault_gpa"],
                    c["fault_gla"])
        return ("exception_exit", c["vector"], InterruptionType.HARDWARE_EXCEPTION,
                c["error_code"] if c["has_error_code"] else None,
                c["addr"] if c["vector"] == VECTOR_PF else 0)
    cls = c["cls"]
    if cls in INSTRUCTIONS:
        return ("instruction_exit", INSTRUCTIONS[cls],
                c["ea"] if cls is InsnClass.INVLPG else 0)
    if cls in (InsnClass.RDMSR, InsnClass.WRMSR):
        return ("msr_exit", c["msr"], cls is InsnClass.WRMSR)
    if cls in (InsnClass.MOV_FROM_CR, InsnClass.MOV_TO_CR):
        to = cls is InsnClass.MOV_TO_CR
        return ("cr_access_exit", CrAccessType.MOV_TO_CR if to else CrAccessType.MOV_FROM_CR,
                c["reg"], c["rm"], False, c["rm_value"], c["cr_value"])
    is_in, immediate = IO[cls]
    return ("io_exit", c["port"], c["io_bytes"], is_in, False, False, immediate)


def _call(q):
    """The model call a query (a `QUERY_LAYOUT` constant) stands for."""
    kind, op = q.kind, q.op
    if kind is ExitQueryKind.EPT:
        e = op.ept
        return ("ept_exit", e.outcome, e.qualification, e.gpa, e.gla)
    if kind is ExitQueryKind.EXCEPTION:
        e = op.exception
        return ("exception_exit", e.vector, e.type, e.error_code if e.has_error_code else None,
                e.qualification)
    if kind is ExitQueryKind.INSTRUCTION:
        return ("instruction_exit", op.instruction.reason, op.instruction.qualification)
    if kind is ExitQueryKind.MSR:
        return ("msr_exit", op.msr.msr, bool(op.msr.write))
    if kind is ExitQueryKind.CR_ACCESS:
        cr = op.cr
        return ("cr_access_exit", cr.access, cr.cr, cr.gpr, bool(cr.lmsw_memory), cr.value,
                cr.actual)
    if kind is ExitQueryKind.IO:
        io = op.io
        return ("io_exit", io.port, io.size, bool(io.is_in), bool(io.string), bool(io.rep),
                bool(io.immediate))
    return (kind,)


def test_random_requests_ask_the_sdm_question():
    rng = random.Random(SEED)
    cases = [_case(rng) for _ in range(CASES)]
    dut = ExitQuery()
    seen = set()

    async def bench(ctx):
        for n, c in enumerate(cases):
            for k in ("kind", "cls", "reg", "rm", "ea"):
                ctx.set(dut.request[k], c[k])
            for k in ("unit", "vector", "has_error_code", "error_code", "addr"):
                ctx.set(dut.exception[k], c[k])
            ctx.set(dut.fault_outcome, c["outcome"])
            for k in ("fault_qualification", "fault_gpa", "fault_gla", "msr", "rm_value",
                      "cr_value", "port", "io_bytes"):
                ctx.set(getattr(dut, k), c[k])
            got, want = _call(ctx.get(dut.query)), _expected(c)
            assert got == want, f"case {n}: {got}, expected {want}"
            seen.add(want[0])

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == 6, seen
