"""cocotb driver of the VMX unit (`rtl.vmx.unit.VmxUnit`, Verilog top ``vmx_unit``): it plays the
core. Clock, reset, the memory model (`tb.vmx_memory`), the invalidation monitor and, for every
step, the scoreboard `tb.model.vmx.VmxModel`.

Two memories: ``tb.mem`` behind the unit's memory port and ``tb.model.memory``; software writes
(`write`) go to both. They may differ only inside the regions of VMCSs the model holds active
(the unit writes an evicted VMCS back to its region, the model does not); `check_memory`
compares everything else, VMCLEAR-ed regions included.

Every wait has a watchdog (`watchdog` cycles): an instruction must be accepted and answered
within it, or the test fails.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from rtl.arch.vmx import FIELDS, VmxMode, VmxOp, VmxResult
from rtl.arch.vmx import EXIT_SAVED_GUEST_FIELDS, FieldType
from rtl.translation.layouts import context_layout, invalidation_layout
from rtl.vmx.layouts import WORKING_FIELDS, WORKING_LAYOUT, member_name
from rtl.vmx.vmcs_cache import field_lane, field_row
from rtl.vmx.ports import (ENTRY_LAYOUT, EXIT_LAYOUT, HOST_LOAD_LAYOUT, HOST_SEGMENTS,
                           INSTR_LAYOUT, RESULT_LAYOUT)
from tb.model.translation import Memory
from tb.model.vmx import CpuState, Operands, VmxModel
from tb.structs import pack, unpack
from tb.vmx_memory import VmxMemoryModel

__all__ = ["VmxTB", "TestbenchError", "cpu_fields"]

PERIOD_NS = 10
_U64 = (1 << 64) - 1


class TestbenchError(AssertionError):
    pass


def cpu_fields(cpu: CpuState) -> dict:
    return {"cpl": cpu.cpl, "cr0": cpu.cr0 & _U64, "cr4": cpu.cr4 & _U64, "efer": cpu.efer & _U64,
            "cs_l": int(bool(cpu.cs_l)), "rflags": cpu.rflags & _U64,
            "feature_control": cpu.feature_control & _U64,
            "mov_ss_blocking": int(bool(cpu.mov_ss_blocking))}


class VmxTB:
    def __init__(self, dut, *, seed=1, latency=(0, 8), mem_req_ready=0.8, mem_resp_valid=0.8,
                 result_ready=0.8, inval_ready=0.7, watchdog=5000):
        self.dut = dut
        self.log = dut._log
        self.rng = random.Random(seed)
        self.mem = Memory()
        self.model = VmxModel(Memory())
        self.memmodel = VmxMemoryModel(dut, self.mem, rng=random.Random(self.rng.getrandbits(64)),
                                       latency=latency, req_ready=mem_req_ready,
                                       resp_valid=mem_resp_valid)
        self.result_ready = result_ready
        self.inval_ready = inval_ready
        self.watchdog = watchdog
        self.invals: list[dict] = []
        self.cycle = 0
        self.ops = 0
        self.regions: set[int] = set()
        self.deferred_failure = ""

    # --- setup ---------------------------------------------------------------------------------

    async def start(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        dut.instr__valid.value = 0
        dut.instr__payload.value = 0
        dut.result__ready.value = 0
        dut.inval__ready.value = 0
        dut.msr_addr.value = 0
        dut.exit__valid.value = 0
        dut.exit__payload.value = 0
        dut.exit_resp__ready.value = 0
        self.memmodel.start()
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        cocotb.start_soon(self._monitor())
        await RisingEdge(dut.clk)

    async def _monitor(self):
        """Cycle counter, invalidation port (random ready), random result back-pressure."""
        dut = self.dut
        layout = invalidation_layout()
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            dut.inval__ready.value = int(self.rng.random() < self.inval_ready)
            await ReadOnly()
            if int(dut.inval__valid.value) and int(dut.inval__ready.value):
                self.invals.append(unpack(layout, int(dut.inval__payload.value)))

    def write(self, addr: int, value: int):
        """Software writes memory (both the unit's and the model's)."""
        self.mem.write(addr, value)
        self.model.memory.write(addr, value)

    def region(self, addr: int, revision: int | None = None, shadow: bool = False):
        """Prepare a VMXON/VMCS region: its revision dword."""
        self.model.write_region_header(addr, revision, shadow)
        self.mem.write(addr, self.model.memory.read(addr))
        self.regions.add(addr)

    def fail(self, msg: str):
        raise TestbenchError(msg)

    # --- the instruction port --------------------------------------------------------------

    async def issue(self, op: VmxOp, cpu: CpuState, o: Operands | None = None, *,
                    precheck: bool = False, result_ready: float | None = None) -> tuple[dict, int]:
        """Send one instruction and wait for its answer: (result fields, cycles from the
        accepting edge to the answer's edge)."""
        dut = self.dut
        o = o or Operands()
        word = pack(INSTR_LAYOUT, op=VmxOp(op), precheck=int(precheck),
                    register_operand=int(bool(o.register_operand)), mem=o.mem & ((1 << 128) - 1),
                    reg=o.reg & _U64, value=o.value & _U64, qualification=o.qualification & _U64,
                    cpu=cpu_fields(cpu))
        rr = self.result_ready if result_ready is None else result_ready
        dut.instr__payload.value = word
        dut.instr__valid.value = 1
        dut.result__ready.value = int(self.rng.random() < rr)
        accepted = None
        waited = 0
        while True:
            await ReadOnly()
            if accepted is None and int(dut.instr__ready.value):
                accepted = self.cycle
                took = True
            else:
                took = False
            if accepted is not None and not took and int(dut.result__valid.value) \
                    and int(dut.result__ready.value):
                res = unpack(RESULT_LAYOUT, int(dut.result__payload.value))
                cycles = self.cycle - accepted
                self.last_accept, self.last_answer = accepted, self.cycle
                await RisingEdge(dut.clk)
                dut.result__ready.value = 0
                return res, cycles
            await RisingEdge(dut.clk)
            waited += 1
            if took:
                dut.instr__valid.value = 0
            dut.result__ready.value = int(self.rng.random() < rr)
            if waited > self.watchdog:
                self.fail(f"watchdog: {VmxOp(op).name} not answered in {self.watchdog} cycles "
                          f"(accepted={accepted})")

    # --- scoreboard --------------------------------------------------------------------------

    def compare(self, what: str, res: dict, exp, precheck: bool = False):
        def bad(msg):
            self.fail(f"{what}: {msg}\n  rtl   {res}\n  model {exp!r}")
        if precheck:
            if exp is None:
                if not res["proceed"]:
                    bad("precheck: model proceeds, RTL decided")
                return
            if res["proceed"]:
                bad("precheck: model decided, RTL proceeds")
        elif res["proceed"]:
            bad("proceed outside precheck")
        if VmxResult(res["kind"]) is not exp.kind:
            bad("kind")
        if exp.kind is VmxResult.FAIL_VALID and getattr(res["error"], "value", res["error"]) \
                != exp.error.value:
            bad("error number")
        if exp.kind is VmxResult.VM_EXIT:
            if res["exit_reason"] != exp.exit_reason or res["qualification"] != exp.qualification:
                bad("exit reason/qualification")
        if exp.value is not None and res["value"] != exp.value:
            bad("value")
        flags = exp.flags
        if (flags is None) != (not res["flags_valid"]) or (flags is not None
                                                             and res["flags"] != flags):
            bad("flags")
        if exp.eptp is not None and res["eptp"] != exp.eptp:
            bad("eptp")

    def check_state(self, what: str):
        dut = self.dut
        m = self.model
        if VmxMode(int(dut.mode.value)) is not m.mode:
            self.fail(f"{what}: mode {int(dut.mode.value)} != {m.mode}")
        if int(dut.current_vmcs.value) != m.current_pointer:
            self.fail(f"{what}: current VMCS {int(dut.current_vmcs.value):#x} != "
                      f"{m.current_pointer:#x}")
        if m.mode is not VmxMode.OUTSIDE and int(dut.vmxon_pointer.value) != m.vmxon_pointer:
            self.fail(f"{what}: VMXON pointer")
        if m.mode is VmxMode.NON_ROOT:
            self.compare_ctx(what)
        if self.deferred_failure:
            self.fail(self.deferred_failure)
        if m.current is not None:
            # A write into the working copy (VMWRITE, the VMfail error number, VMFUNC's EPTP)
            # is read back from the cache memory in the cycle of the answer and lands at the
            # next edge (its `ReadBack`'s `land`, `land_row`, `land_mask`): compare every other
            # field at the end of this cycle and those at the end of the next, without holding back
            # the next instruction (a VM exit taken in this cycle writes other fields at that
            # edge; nothing else changes the working copy that early).
            cocotb.start_soon(self._check_working_copy(what, dict(m.current.fields), m.current))

    async def _check_working_copy(self, what: str, fields: dict, vmcs):
        await ReadOnly()
        if int(self.dut.row_copy.busy.value):
            await self._check_working_copy_after_copy(what, fields, vmcs)
            return
        landing = []
        read_back = self.dut.read_back
        if int(read_back.land.value):
            row, mask = int(read_back.land_row.value), int(read_back.land_mask.value)
            landing = [f for f in WORKING_FIELDS if field_row(f.slot) == row
                       and mask >> (2 * field_lane(f.slot)) & 0b11]
        wc = unpack(WORKING_LAYOUT, int(self.dut.vmcs.value))
        todo = [f for f in WORKING_FIELDS if f not in landing]
        for step in range(2):
            for f in todo:
                if wc[member_name(f)] != fields[f.name]:
                    self.deferred_failure = (f"{what}: working copy {f.name} = "
                                             f"{wc[member_name(f)]:#x}, model {fields[f.name]:#x}")
                    self.fail(self.deferred_failure)
            if not landing or step:
                return
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            wc = unpack(WORKING_LAYOUT, int(self.dut.vmcs.value))
            todo = landing

    async def _check_working_copy_after_copy(self, what: str, fields: dict, vmcs):
        """A VMPTRLD's copy of the new VMCS's rows runs on after the answer (`RowCopy`), while
        the next instructions run: once it and every write on its way into the working copy
        have landed, compare the fields the model has not changed since `fields` was taken (a
        field written meanwhile is compared by that write's own check; the model runs ahead
        of the unit by the instruction being issued, so nothing is compared once the model's
        current VMCS is another one)."""
        dut = self.dut
        while int(dut.row_copy.busy.value) or int(dut.read_back.pending.value):
            await RisingEdge(dut.clk)
            await ReadOnly()
        if self.model.current is not vmcs:
            return
        now = vmcs.fields
        wc = unpack(WORKING_LAYOUT, int(dut.vmcs.value))
        for f in WORKING_FIELDS:
            if f.name in now and now[f.name] == fields[f.name] \
                    and wc[member_name(f)] != fields[f.name]:
                self.deferred_failure = (f"{what}: working copy {f.name} = "
                                         f"{wc[member_name(f)]:#x} after the copy, "
                                         f"model {fields[f.name]:#x}")
                self.fail(self.deferred_failure)

    def check_memory(self, what: str, addrs=None):
        """Regions the model does not hold active must be equal in both memories."""
        for base in (addrs if addrs is not None else self.regions):
            if base in self.model.vmcs:
                continue
            for off in range(8, 16 + 8 * len(FIELDS), 8):
                a, b = self.mem.read(base + off), self.model.memory.read(base + off)
                if a != b:
                    self.fail(f"{what}: memory {base + off:#x} = {a:#x}, model {b:#x}")

    async def step(self, op: VmxOp, cpu: CpuState | None = None, o: Operands | None = None, *,
                   precheck: bool | None = None, what: str = ""):
        """One instruction on the unit and on the model, compared (with a precheck first when
        `precheck`, random by default). Returns (model result, RTL result, cycles)."""
        cpu = cpu or CpuState()
        o = o or Operands()
        op = VmxOp(op)
        what = what or f"op #{self.ops} {op.name}"
        self.ops += 1
        if precheck is None:
            precheck = self.rng.random() < 0.25
        if precheck:
            exp = self.model.precheck(op, cpu, o)
            res, _ = await self.issue(op, cpu, o, precheck=True)
            self.compare(what + " (precheck)", res, exp, precheck=True)
        n_inval = len(self.invals)
        exp = self.model.execute(op, cpu, o)
        res, cycles = await self.issue(op, cpu, o)
        self.compare(what, res, exp)
        # Invalidation requests.
        got = self.invals[n_inval:]
        want = [exp.invalidation] if exp.invalidation is not None else []
        if len(got) != len(want):
            self.fail(f"{what}: invalidations {got}, model {want}")
        for g, w in zip(got, want):
            if (g["kind"], g["vpid"], g["eptp"], g["gla"]) != (w.kind, w.vpid, w.eptp, w.gla):
                self.fail(f"{what}: invalidation {g}, model {w}")
        if exp.host is not None:
            self.compare_host(what, exp.host)
        if exp.entry is not None:
            self.compare_entry(what, exp.entry)
        self.check_state(what)
        if op is VmxOp.VMCLEAR and exp.kind is VmxResult.SUCCEED:
            self.check_memory(what, [o.mem])
        if self.memmodel.errors:
            self.fail(f"{what}: memory port: {self.memmodel.errors}")
        return exp, res, cycles

    # --- VM entry / VM exit ------------------------------------------------------------------

    def compare_host(self, what: str, h):
        got = unpack(HOST_LOAD_LAYOUT, int(self.dut.host.value))
        want = {"cr0": h.cr0, "cr3": h.cr3, "cr4": h.cr4, "efer": h.efer,
                "pat_valid": int(h.pat is not None), "rsp": h.rsp, "rip": h.rip,
                "rflags": h.rflags, "cs_l": int(h.cs_l), "fs_base": h.fs_base,
                "gs_base": h.gs_base, "tr_base": h.tr_base, "gdtr_base": h.gdtr_base,
                "idtr_base": h.idtr_base, "sysenter_cs": h.sysenter_cs,
                "sysenter_esp": h.sysenter_esp, "sysenter_eip": h.sysenter_eip}
        if h.pat is not None:
            want["pat"] = h.pat
        for seg in HOST_SEGMENTS:
            want[f"{seg}_selector"] = h.selectors[seg.upper()]
        for k, v in want.items():
            if got[k] != v:
                self.fail(f"{what}: host {k} = {got[k]:#x}, model {v:#x}")

    def compare_entry(self, what: str, e):
        got = unpack(ENTRY_LAYOUT, int(self.dut.entry.value))
        for name, v in e.guest.items():
            if got["guest"][member_name(name)] != v:
                self.fail(f"{what}: entry guest {name} = {got['guest'][member_name(name)]:#x}, "
                          f"model {v:#x}")
        want = {"load_debug": int("GUEST_DR7" in e.guest),
                "load_pat": int("GUEST_IA32_PAT" in e.guest),
                "pdptes_valid": int("GUEST_PDPTR0" in e.guest),
                "ept_enabled": int(e.ept_enabled), "eptp": e.eptp,
                "vpid_enabled": int(e.vpid_enabled), "vpid": e.vpid,
                "unrestricted_guest": int(e.unrestricted_guest),
                "timer_valid": int(e.preemption_timer is not None),
                "event_valid": int(e.event is not None), "pending_mtf": int(e.pending_mtf)}
        if e.preemption_timer is not None:
            want["timer"] = e.preemption_timer
        if e.event is not None:
            want.update(event_info=e.event.info, event_error=e.event.error_code,
                        event_len=e.event.instruction_length)
        for k, v in want.items():
            if got[k] != v:
                self.fail(f"{what}: entry {k} = {got[k]:#x}, model {v:#x}")
        self.compare_ctx(what)

    def compare_ctx(self, what: str):
        if self.model.guest is None:
            return
        c = self.model.guest.translation_context()
        got = unpack(context_layout(), int(self.dut.ctx.value))
        want = {"cr0": c.cr0 & 0xFFFF_FFFF, "cr3": c.cr3, "cr4": c.cr4 & 0xFFFF_FFFF,
                "efer": c.efer & 0xFFFF_FFFF, "eptp": c.eptp, "ept_enable": int(c.ept_enable),
                "vpid": c.vpid}
        for k, v in want.items():
            if got[k] != v:
                self.fail(f"{what}: translation context {k} = {got[k]:#x}, model {v:#x}")

    async def vm_exit(self, reason: int, qualification: int = 0, *, gla: int = 0, gpa: int = 0,
                      instr_len: int = 0, instr_info: int = 0, guest: dict | None = None,
                      intr_info: int = 0, intr_error: int = 0, idt_vectoring_info: int = 0,
                      idt_vectoring_error: int = 0, what: str = "") -> tuple[object, int]:
        """A VM exit from the core: the model's `vm_exit` and the unit's exit port, compared
        (host state, invalidation, working copy). `guest`: guest-state field values (default:
        the values the entry loaded); only those of `EXIT_SAVED_GUEST_FIELDS` are sent, to
        the unit and to the model. Returns (model result, cycles from the accepting
        edge to the answer's edge)."""
        dut = self.dut
        what = what or f"VM exit {reason} (op #{self.ops})"
        self.ops += 1
        m = self.model
        if guest is None:
            guest = {f.name: m.current.fields[f.name] for f in FIELDS
                     if f.type is FieldType.GUEST}
            guest.update(m.guest.guest)
        # The exit port carries only the fields a VM exit saves; the model keeps the others
        # at their VMCS values, as the unit does.
        unknown = set(guest) - {f.name for f in FIELDS if f.type is FieldType.GUEST}
        if unknown:
            raise ValueError(f"not guest-state fields: {sorted(unknown)}")
        guest = {k: v for k, v in guest.items() if k in EXIT_SAVED_GUEST_FIELDS}
        n_inval = len(self.invals)
        exp = m.vm_exit(reason, qualification, gla, gpa, instr_len, instr_info, guest,
                        intr_info=intr_info, intr_error=intr_error,
                        idt_vectoring_info=idt_vectoring_info,
                        idt_vectoring_error=idt_vectoring_error)
        word = pack(EXIT_LAYOUT, reason=reason, qualification=qualification, gla=gla, gpa=gpa,
                    instr_len=instr_len, instr_info=instr_info, intr_info=intr_info,
                    intr_error=intr_error, idt_vectoring_info=idt_vectoring_info,
                    idt_vectoring_error=idt_vectoring_error,
                    guest={member_name(k): v for k, v in guest.items()})
        dut.exit__payload.value = word
        dut.exit__valid.value = 1
        dut.exit_resp__ready.value = 1
        accepted = None
        waited = 0
        while True:
            await ReadOnly()
            took = False
            if accepted is None and int(dut.exit__ready.value):
                accepted = self.cycle
                took = True
            if accepted is not None and not took and int(dut.exit_resp__valid.value) \
                    and int(dut.exit_resp__ready.value):
                cycles = self.cycle - accepted
                self.last_accept, self.last_answer = accepted, self.cycle
                await RisingEdge(dut.clk)
                dut.exit_resp__ready.value = 0
                break
            await RisingEdge(dut.clk)
            if took:
                dut.exit__valid.value = 0
            waited += 1
            if waited > self.watchdog:
                self.fail(f"watchdog: {what} not answered")
        self.compare_host(what, exp.host)
        got = self.invals[n_inval:]
        want = [exp.invalidation] if exp.invalidation is not None else []
        if len(got) != len(want) or any(
                (g["kind"], g["vpid"], g["eptp"], g["gla"]) != (w.kind, w.vpid, w.eptp, w.gla)
                for g, w in zip(got, want)):
            self.fail(f"{what}: invalidations {got}, model {want}")
        self.check_state(what)
        return exp, cycles

    async def cycles(self, n: int):
        for _ in range(n):
            await RisingEdge(self.dut.clk)
