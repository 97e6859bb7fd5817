"""Testbench helpers for `rtl.vmx.exit_decisions.ExitDecisions` (Amaranth simulator).

* `Query`: one query in the model's terms (kind + operands of that kind) and how it maps to the
  RTL's `QUERY_LAYOUT` (`Query.payload`) and to the model's decision method (`expected`).
* `BitmapMemory`: a `tb.model.translation.Memory` whose qwords not written yet read as random
  values (of a random bit density), fixed at the first read, so the model and the RTL see the
  same bitmaps without the test laying them out.
* `run_queries`: drives a list of (VMCS fields, query) through the RTL, answering its bitmap reads
  from a `Memory` with random latency and random back-pressure, with a watchdog per query.
* `model_for`: a `VmxModel` in non-root operation whose current VMCS holds the given fields.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from amaranth.sim import Simulator

from rtl.arch import Outcome
from rtl.arch.vmx import (
    CR0_PE,
    CR0_TS,
    FIELDS,
    INSTRUCTION_EXIT_REASON,
    CrAccessType,
    ExitReason,
    InterruptionType,
    VmxMode,
)
from rtl.vmx.exit_decisions import QUERY_LAYOUT, ExitDecisions, ExitQueryKind
from rtl.vmx.layouts import WORKING_FIELDS, member_name
from tb.model.translation import Memory
from tb.model.vmx import CpuState, Operands, Vmcs, VmxModel

U64 = (1 << 64) - 1
#: Where the model keeps the current VMCS (any address; the decisions never read the region).
VMCS_ADDR = 0x1000
#: Cycles a query may take from its transfer to its decision's transfer, memory waits included
#: (two reads at the longest latency and back-pressure below, plus the block's own cycles).
WATCHDOG_CYCLES = 80

#: The member of the query's operand union each kind uses (None: no operands).
OPERANDS_MEMBER = {
    ExitQueryKind.EXCEPTION: "exception",
    ExitQueryKind.TRIPLE_FAULT: None,
    ExitQueryKind.EXTERNAL_INTERRUPT: "interrupt",
    ExitQueryKind.INTERRUPT_WINDOW: "window",
    ExitQueryKind.NMI_WINDOW: "window",
    ExitQueryKind.INSTRUCTION: "instruction",
    ExitQueryKind.CR_ACCESS: "cr",
    ExitQueryKind.DR_ACCESS: "dr",
    ExitQueryKind.IO: "io",
    ExitQueryKind.MSR: "msr",
    ExitQueryKind.MTF: None,
    ExitQueryKind.EPT: "ept",
}

DECISION_FIELDS = ("exit", "reason", "qualification", "gla", "gpa", "intr_info", "intr_error",
                   "cr_value")


@dataclass
class Query:
    kind: ExitQueryKind
    ops: dict = field(default_factory=dict)

    @property
    def payload(self) -> int:
        """The `QUERY_LAYOUT` bits (built from the layout's offsets, so that operand values that
        are not members of their enum, e.g. Outcome 5, can be sent too)."""
        bits = ExitQueryKind(self.kind).value
        member = OPERANDS_MEMBER[self.kind]
        if member:
            op = QUERY_LAYOUT["op"]
            layout = op.shape[member].shape
            for name, f in layout:
                value = int(getattr(self.ops[name], "value", self.ops[name]))
                bits |= (value & ((1 << f.width) - 1)) << (op.offset + f.offset)
        return bits

    def __repr__(self):
        ops = ", ".join(f"{k}={v:#x}" if isinstance(v, int) and not hasattr(v, "name")
                        else f"{k}={getattr(v, 'name', v)}" for k, v in self.ops.items())
        return f"Query({self.kind.name}: {ops})"


def decision(exit_=0, reason=0, qualification=0, gla=0, gpa=0, intr_info=0, intr_error=0,
             cr_value=0) -> dict:
    """A decision as the testbench compares it (plain ints)."""
    return {"exit": int(exit_), "reason": int(getattr(reason, "value", reason)),
            "qualification": qualification, "gla": gla, "gpa": gpa, "intr_info": intr_info,
            "intr_error": intr_error, "cr_value": cr_value}


def model_for(fields: dict[str, int], memory: Memory | None = None) -> VmxModel:
    """A model in VMX non-root operation whose current VMCS has `fields` (others 0)."""
    m = VmxModel(memory if memory is not None else Memory())
    vmcs = Vmcs()
    for name, value in fields.items():
        vmcs[name] = value
    m.vmcs[VMCS_ADDR] = vmcs
    m.current_pointer = VMCS_ADDR
    m.mode = VmxMode.NON_ROOT
    return m


_VMX_OP_OF_REASON = {reason: op for op, reason in INSTRUCTION_EXIT_REASON.items()}


def lmsw_value(actual: int, source: int) -> int:
    """CR0 after LMSW without the VMX masks: MP/EM/TS from the source, PE set if either has it."""
    loaded = 0xE
    return (actual & ~(loaded | CR0_PE)) | (source & loaded) | ((actual | source) & CR0_PE)


def expected(m: VmxModel, q: Query) -> dict:
    """The model's answer to `q`, as a decision dict (`cr_value` per the RTL's docstring)."""
    o = q.ops
    cr_value = 0
    k = q.kind
    if k is ExitQueryKind.EXCEPTION:
        d = m.exception_exit(o["vector"], type_=InterruptionType(o["type"]),
                             error_code=o["error_code"] if o["has_error_code"] else None,
                             qualification=o["qualification"])
    elif k is ExitQueryKind.TRIPLE_FAULT:
        d = m.triple_fault_exit()
    elif k is ExitQueryKind.EXTERNAL_INTERRUPT:
        d = m.external_interrupt_exit(o["vector"])
    elif k is ExitQueryKind.INTERRUPT_WINDOW:
        d = m.interrupt_window_exit(o["rflags"], o["interruptibility"])
    elif k is ExitQueryKind.NMI_WINDOW:
        d = m.nmi_window_exit(o["interruptibility"])
    elif k is ExitQueryKind.INSTRUCTION:
        reason = ExitReason(o["reason"])
        if reason in _VMX_OP_OF_REASON:
            # The VMX unit's own answer in non-root operation (no #UD condition in CpuState()).
            r = m.execute(_VMX_OP_OF_REASON[reason], CpuState(),
                          Operands(qualification=o["qualification"]))
            assert r.exit_reason is not None, r
            d = r.exit_decision
        else:
            d = m.instruction_exit(reason, o["qualification"])
    elif k is ExitQueryKind.CR_ACCESS:
        access, cr = CrAccessType(o["access"]), o["cr"]
        d = m.cr_access_exit(access, cr, value=o["value"], gpr=o["gpr"],
                             lmsw_memory=bool(o["lmsw_memory"]))
        actual, value = o["actual"], o["value"]
        if access is CrAccessType.MOV_TO_CR:
            cr_value = m.cr_write_value(cr, actual, value) if cr in (0, 4) else value
        elif access is CrAccessType.MOV_FROM_CR:
            cr_value = m.cr_read_value(cr, actual) if cr in (0, 4) else actual
        elif access is CrAccessType.CLTS:
            cr_value = m.cr_write_value(0, actual, actual & ~CR0_TS)
        else:
            cr_value = m.cr_write_value(0, actual, lmsw_value(actual, value & 0xFFFF))
        cr_value &= U64
    elif k is ExitQueryKind.DR_ACCESS:
        d = m.dr_access_exit(o["dr"], bool(o["from_dr"]), o["gpr"])
    elif k is ExitQueryKind.IO:
        d = m.io_exit(o["port"], o["size"], is_in=bool(o["is_in"]), string=bool(o["string"]),
                      rep=bool(o["rep"]), immediate=bool(o["immediate"]))
    elif k is ExitQueryKind.MSR:
        d = m.msr_exit(o["msr"], bool(o["write"]))
    elif k is ExitQueryKind.MTF:
        d = m.mtf_exit()
    elif k is ExitQueryKind.EPT:
        d = m.ept_exit(Outcome(o["outcome"]), o["qualification"], o["gpa"], o["gla"])
    else:  # pragma: no cover
        raise ValueError(k)
    if d is None:
        return decision(cr_value=cr_value)
    return decision(1, d.reason, d.qualification, d.gla, d.gpa, d.intr_info, d.intr_error,
                    cr_value)


class BitmapMemory(Memory):
    """Qwords that were never written read as random values, fixed at their first read."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self.rng = rng
        self.reads: list[int] = []      # every read, in order (model's and RTL's)

    def read(self, addr: int) -> int:
        self._check(addr)
        self.reads.append(addr)
        if addr not in self._words:
            r = self.rng
            density = r.choice(("zero", "sparse", "sparse", "half", "ones"))
            value = {"zero": 0, "ones": U64, "half": r.getrandbits(64),
                     "sparse": r.getrandbits(64) & r.getrandbits(64) & r.getrandbits(64)
                     & r.getrandbits(64)}[density]
            self._words[addr] = value
        return self._words[addr]


@dataclass
class RtlAnswer:
    decision: dict
    reads: list[int]            # qword addresses the RTL read for this query, in order
    cycles: int                 # from the query's transfer to the decision's transfer


def _decision_dict(const) -> dict:
    out = {}
    for name in DECISION_FIELDS:
        v = getattr(const, name)
        out[name] = int(getattr(v, "value", v))
    return out


def run_queries(cases, memory: Memory, *, seed: int = 0, max_latency: int = 6,
                backpressure: float = 0.3, maxphyaddr: int = 40, gap: float = 0.2
                ) -> list[RtlAnswer]:
    """Drive `cases` ((vmcs fields by name, Query) pairs) through the RTL, one query at a time.

    The memory answers each read `0..max_latency` cycles after it accepts it; the request and
    decision sides are back-pressured with probability `backpressure`; a query is offered after a
    random gap. Fails (AssertionError) if a decision takes more than WATCHDOG_CYCLES cycles, a
    read is not 8-byte aligned / is outside MAXPHYADDR, a second read is requested before the
    first's response, or a response is still untaken when the decision is.
    """
    dut = ExitDecisions(maxphyaddr=maxphyaddr)
    rng = random.Random(seed)
    results: list[RtlAnswer] = []

    async def bench(ctx):
        current = None
        for fields, query in cases:
            if fields is not current:
                ctx.set(dut.vmcs, {member_name(f): fields.get(f.name, 0) & f.mask
                                   for f in WORKING_FIELDS})
                current = fields
            while rng.random() < gap:
                await ctx.tick()
            ctx.set(dut.query.payload.as_value(), query.payload)
            ctx.set(dut.query.valid, 1)
            sent = None
            cycles = 0
            reads: list[int] = []
            pending = None          # [due cycle, data] of the read being answered
            got = None
            while got is None:
                assert cycles < WATCHDOG_CYCLES, f"no decision for {query} in {cycles} cycles"
                # Memory request side.
                req_ready = rng.random() >= backpressure
                ctx.set(dut.mem_req.ready, req_ready)
                accepted = None         # (due cycle, data) of a read accepted at this edge
                if ctx.get(dut.mem_req.valid) and req_ready:
                    assert pending is None, "a second read before the first's response"
                    addr = ctx.get(dut.mem_req.payload.addr)
                    assert addr & 7 == 0 and addr < 1 << maxphyaddr, hex(addr)
                    reads.append(addr)
                    accepted = (cycles + 1 + rng.randint(0, max_latency), memory.read(addr))
                # Memory response side.
                resp_fire = False
                if pending is not None and pending[0] <= cycles:
                    ctx.set(dut.mem_resp.valid, 1)
                    ctx.set(dut.mem_resp.payload.data, pending[1])
                    resp_fire = bool(ctx.get(dut.mem_resp.ready))
                else:
                    ctx.set(dut.mem_resp.valid, 0)
                # Decision side.
                dec_ready = rng.random() >= backpressure
                ctx.set(dut.decision.ready, dec_ready)
                if ctx.get(dut.decision.valid):
                    assert sent is not None, "a decision before the query was taken"
                    if dec_ready:
                        got = _decision_dict(ctx.get(dut.decision.payload))
                q_fire = sent is None and ctx.get(dut.query.ready)
                await ctx.tick()
                cycles += 1
                if q_fire:
                    sent = cycles
                    ctx.set(dut.query.valid, 0)
                if resp_fire:
                    pending = None
                if accepted is not None:
                    pending = list(accepted)
            assert pending is None, f"{query}: the response to a read was not taken"
            ctx.set(dut.mem_resp.valid, 0)
            ctx.set(dut.decision.ready, 0)
            results.append(RtlAnswer(got, reads, cycles - sent))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


# =================================================================================================
# Random VMCS configurations and queries (the differential test)
# =================================================================================================

_INSTRUCTIONS = (ExitReason.CPUID, ExitReason.GETSEC, ExitReason.INVD, ExitReason.XSETBV,
                 ExitReason.HLT, ExitReason.INVLPG, ExitReason.RDTSC, ExitReason.RDPMC,
                 ExitReason.MWAIT, ExitReason.MONITOR, ExitReason.PAUSE,
                 *INSTRUCTION_EXIT_REASON.values())
_IO_EDGES = (0x0, 0x3F, 0x3E, 0x3D, 0x40, 0x7FBF, 0x7FFD, 0x7FFE, 0x7FFF, 0x8000, 0xFFBF, 0xFFFC,
             0xFFFD, 0xFFFE, 0xFFFF)
_MSR_EDGES = (0x0, 0x3F, 0x40, 0x1FFF, 0x2000, 0xBFFF_FFFF, 0xC000_0000, 0xC000_1FFF,
              0xC000_2000, 0xFFFF_FFFF, 0xC000_0080, 0x174)


def _sparse(r: random.Random, bits: int) -> int:
    return r.getrandbits(bits) & r.getrandbits(bits) & r.getrandbits(bits)


def _pick(r: random.Random, bits: int) -> int:
    """A value of `bits` bits: random, sparse, 0 or all ones."""
    kind = r.random()
    if kind < 0.5:
        return r.getrandbits(bits)
    if kind < 0.8:
        return _sparse(r, bits)
    return 0 if kind < 0.9 else (1 << bits) - 1


def random_vmcs(r: random.Random, maxphyaddr: int = 40) -> dict[str, int]:
    """Every field random (the decisions must ignore the others), the ones they read biased so
    that both answers of every rule occur; bitmap addresses 4 KiB aligned below 2^maxphyaddr (as
    the VM-entry checks require)."""
    f = {fld.name: r.getrandbits(fld.bits) for fld in FIELDS}
    for name in ("PIN_BASED_VM_EXEC_CONTROL", "CPU_BASED_VM_EXEC_CONTROL", "VM_EXIT_CONTROLS",
                 "EXCEPTION_BITMAP"):
        f[name] = _pick(r, 32)
    pf_mask = _pick(r, 32) if r.random() < 0.5 else _sparse(r, 5)
    f["PAGE_FAULT_ERROR_CODE_MASK"] = pf_mask
    f["PAGE_FAULT_ERROR_CODE_MATCH"] = (r.getrandbits(32) & pf_mask if r.random() < 0.8
                                       else r.getrandbits(32))
    f["CR3_TARGET_COUNT"] = r.choice((0, 1, 2, 3, 4, 4, 5, 0xFFFF_FFFF, r.getrandbits(32)))
    for name in ("CR0_GUEST_HOST_MASK", "CR4_GUEST_HOST_MASK", "CR0_READ_SHADOW",
                 "CR4_READ_SHADOW"):
        f[name] = _pick(r, 64)
    for name in ("IO_BITMAP_A", "IO_BITMAP_B", "MSR_BITMAP"):
        f[name] = r.getrandbits(maxphyaddr - 12) << 12
    return f


def random_query(r: random.Random, f: dict[str, int]) -> Query:
    """A random query whose operands are biased towards the VMCS's values and rule edges."""
    K = ExitQueryKind
    # The kinds with the most rules come up more often.
    kind = r.choice(list(K) + [K.CR_ACCESS, K.CR_ACCESS, K.CR_ACCESS, K.IO, K.IO, K.MSR,
                               K.EXCEPTION])
    if kind is K.EXCEPTION:
        vector = r.choice((r.randrange(32), r.randrange(32), 14, 14, 2, r.randrange(256)))
        error = r.choice((r.getrandbits(32), r.getrandbits(5),
                          f["PAGE_FAULT_ERROR_CODE_MATCH"] | _sparse(r, 32)))
        ops = {"vector": vector, "type": r.randrange(8), "has_error_code": r.getrandbits(1),
               "error_code": error, "qualification": r.getrandbits(64)}
    elif kind is K.EXTERNAL_INTERRUPT:
        ops = {"vector": r.getrandbits(8)}
    elif kind in (K.INTERRUPT_WINDOW, K.NMI_WINDOW):
        ops = {"rflags": r.getrandbits(64),
               "interruptibility": r.choice((0, r.getrandbits(5), r.getrandbits(32)))}
    elif kind is K.INSTRUCTION:
        ops = {"reason": r.choice(_INSTRUCTIONS), "qualification": r.getrandbits(64)}
    elif kind is K.CR_ACCESS:
        cr = r.choice((0, 0, 4, 4, 3, 3, 8, r.randrange(16)))
        access = CrAccessType(r.randrange(4))
        if cr == 3 and r.random() < 0.5:
            access = CrAccessType.MOV_TO_CR
        if cr in (0, 4) and r.random() < 0.6:
            # Agree with the read shadow in the owned bits, or differ in a few.
            shadow = f[f"CR{cr}_READ_SHADOW"]
            value = shadow ^ (_sparse(r, 64) if r.random() < 0.5 else 0)
            value ^= r.getrandbits(64) & ~f[f"CR{cr}_GUEST_HOST_MASK"]
        elif cr == 3 and r.random() < 0.6:
            value = f[f"CR3_TARGET_VALUE{r.randrange(4)}"]
        else:
            value = r.getrandbits(64)
        if access is CrAccessType.LMSW and r.random() < 0.5:
            value = (f["CR0_READ_SHADOW"] ^ r.getrandbits(2) << r.randrange(4)) & 0xFFFF \
                | r.getrandbits(48) << 16
        ops = {"access": access, "cr": cr, "gpr": r.getrandbits(4),
               "lmsw_memory": r.getrandbits(1), "value": value & U64,
               "actual": r.getrandbits(64)}
    elif kind is K.DR_ACCESS:
        ops = {"dr": r.getrandbits(3), "from_dr": r.getrandbits(1), "gpr": r.getrandbits(4)}
    elif kind is K.IO:
        port = r.choice((r.getrandbits(16), r.getrandbits(16), r.choice(_IO_EDGES),
                         r.randrange(1024) * 64 - r.randrange(4) & 0xFFFF))
        ops = {"port": port, "size": r.choice((1, 2, 4)), "is_in": r.getrandbits(1),
               "string": r.getrandbits(1), "rep": r.getrandbits(1),
               "immediate": r.getrandbits(1)}
    elif kind is K.MSR:
        msr = r.choice((r.randrange(0x2000), 0xC000_0000 + r.randrange(0x2000),
                        r.choice(_MSR_EDGES), r.getrandbits(32)))
        ops = {"msr": msr, "write": r.getrandbits(1)}
    elif kind is K.EPT:
        ops = {"outcome": r.choice(list(Outcome)), "qualification": r.getrandbits(64),
               "gpa": r.getrandbits(64), "gla": r.getrandbits(64)}
    else:
        ops = {}
    return Query(kind, ops)


def model_reads(memory: BitmapMemory, m: VmxModel, q: Query) -> tuple[dict, list[int]]:
    """The model's decision and the distinct qwords it read, in order."""
    memory.reads = []
    d = expected(m, q)
    distinct = []
    for a in memory.reads:
        if a not in distinct:
            distinct.append(a)
    return d, distinct
