"""The system: core + translation unit + VMX unit + RAM + console and exit ports (`Soc`).

Blocks and how they meet (docs/system.md has the picture):

* `rtl.core.core.Core` issues linear qword accesses; `rtl.soc.data_path.DataPath` sends each
  through the `rtl.translation.unit.TranslationUnit` (host paging in root operation, guest
  paging x EPT in non-root) and then to RAM, and answers the core with the data or the fault;
* the core's system port goes to `rtl.soc.system_unit.SystemUnit`, which drives the
  `rtl.vmx.unit.VmxUnit`, the `rtl.vmx.exit_decisions.ExitDecisions` block and the
  `rtl.vmx.preemption_timer.PreemptionTimer`, and owns the I/O ports;
* `rtl.soc.memory.SystemMemory` arbitrates RAM between the walker, the VMX unit, the bitmap
  reads and the core's data, and gives the loader its debug port.

The translation context is the core's CR0/CR3/CR4/EFER, with the VMX unit's EPTP / EPT enable /
VPID in non-root operation (none in root operation: VPID 0, no EPT).

Board options (all off by default: the ports and the behaviour are then exactly as documented
above): ``pages`` makes the RAM sparse (only those physical 4 KiB pages are backed, see
`rtl.soc.memory.SystemMemory`) and adds the outputs ``unmapped`` / ``unmapped_addr``; ``init``
({physical qword index: value}) preloads RAM (block RAM initialised by the bitstream, no loader);
``console_backpressure`` adds the input ``console_ready``: an OUT to the console port waits
until it is 1 (a slow UART behind a FIFO). Without it the console never waits.

A run: reset, load RAM through the debug port, pulse `start` once (the boot state of
`rtl.arch.system`), then the run ends at the exit port, at HLT in root operation, or at a fault
in root operation (`stop`). `pause` freezes a run that has not ended (a cycle limit) for the
debug port: the RAM takes no new access, so every block waits for its next one; once the access
in flight has finished (a few cycles), `paused` rises and the debug port owns the RAM.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.paging import MAXPHYADDR
from ..arch.system import BOOT_RFLAGS, FAULT_LAYOUT, RAM_BYTES, RunStop
from ..arch.vmx import VmxMode
from ..core.core import Core
from ..core.core_layouts import CoreState
from ..core.layouts import MAX_INSN_BYTES
from ..translation.unit import TranslationUnit
from ..vmx.exit_decisions import ExitDecisions
from ..vmx.preemption_timer import PreemptionTimer
from ..vmx.unit import VmxUnit
from .data_path import DataPath
from .memory import SystemMemory
from .system_unit import SystemUnit

__all__ = ["Soc", "RunStop", "FAULT_LAYOUT", "SOC_TRANSLATION"]


#: The translation unit's configuration in the system: the core has one access in flight, so
#: one walk context is enough; the caches keep the sizes of the default configuration's small
#: arrays.
SOC_TRANSLATION = dict(tag_width=1, contexts=1, tlb_entries=(16, 4, 2), gpsc_entries=(2, 2, 4),
                       epsc_entries=(2, 2, 4), nested_entries=8)


class Soc(wiring.Component):
    def __init__(self, *, ram_bytes=RAM_BYTES, maxphyaddr=MAXPHYADDR, pages=None, init=None,
                 console_backpressure=False):
        self.ram_bytes = ram_bytes
        self.maxphyaddr = maxphyaddr
        self.pages = None if pages is None else tuple(pages)
        self.init = init
        self.console_backpressure = console_backpressure
        extra = {}
        if self.pages is not None:
            extra.update(unmapped=Out(1), unmapped_addr=Out(maxphyaddr))
        if console_backpressure:
            extra.update(console_ready=In(1))
        super().__init__({
            "dbg_addr": In(32),
            "dbg_we": In(1),
            "dbg_wdata": In(64),
            "dbg_rdata": Out(64),
            "start": In(1),
            "pause": In(1),
            "init_rip": In(64),
            "init_rsp": In(64),
            "init_cr3": In(64),
            "running": Out(1),
            "paused": Out(1),
            "stop": Out(RunStop),
            "exit_code": Out(32),
            "fault": Out(FAULT_LAYOUT),
            "console_valid": Out(1),
            "console_data": Out(8),
            "cycles": Out(64),
            "instructions": Out(64),
            "retired": Out(1),
            "retired_rip": Out(64),
            "retired_len": Out(4),
            "retired_bytes": Out(8 * MAX_INSN_BYTES),
            "vm_entry": Out(1),
            "vm_exit": Out(1),
            "vm_entry_failure": Out(1),
            "vm_exit_reason": Out(16),
            "vm_exit_qualification": Out(64),
            "gpr": Out(data.ArrayLayout(64, 16)),
            "rip": Out(64),
            "rflags": Out(64),
            "cr0": Out(64),
            "cr3": Out(64),
            "cr4": Out(64),
            "efer": Out(64),
            "vmx_mode": Out(VmxMode),
            "current_vmcs": Out(64),
            **extra,
        })

    def elaborate(self, platform):
        m = Module()
        M = self.maxphyaddr
        m.submodules.core = core = Core()
        m.submodules.translation = tu = TranslationUnit(maxphyaddr=M, **SOC_TRANSLATION)
        m.submodules.vmx = vmx = VmxUnit(maxphyaddr=M)
        m.submodules.exit_decisions = xd = ExitDecisions(maxphyaddr=M)
        m.submodules.timer = timer = PreemptionTimer()
        m.submodules.system = su = SystemUnit(maxphyaddr=M)
        m.submodules.memory = mem = SystemMemory(ram_bytes=self.ram_bytes, maxphyaddr=M,
                                                 walk_tag_width=tu.mem_tag_width,
                                                 pages=self.pages, init=self.init)
        if self.pages is not None:
            m.d.comb += [self.unmapped.eq(mem.unmapped), self.unmapped_addr.eq(mem.unmapped_addr)]
        m.d.comb += su.console_ready.eq(self.console_ready if self.console_backpressure else 1)

        started = Signal()
        stop = Signal(RunStop)
        running = Signal()
        m.d.comb += [running.eq(started & (stop == RunStop.NONE)), self.running.eq(running),
                     self.stop.eq(stop)]

        # --- boot ------------------------------------------------------------------------------
        # The inputs are registered before anything uses them: no combinational path from a
        # port into the core (good timing on an FPGA, and a simulator need not re-evaluate the
        # core's next-state logic when a testbench drives an input). `start` takes effect one
        # cycle after the pulse.
        start = Signal()
        init_rip = Signal(64)
        init_rsp = Signal(64)
        init_cr3 = Signal(64)
        pause = Signal()
        m.d.sync += [start.eq(self.start), pause.eq(self.pause), init_rip.eq(self.init_rip),
                     init_rsp.eq(self.init_rsp), init_cr3.eq(self.init_cr3)]
        m.d.comb += [core.load.eq(start), core.init_rip.eq(init_rip),
                     core.init_rflags.eq(BOOT_RFLAGS), core.init_cr3.eq(init_cr3)]
        m.d.comb += [core.init_gpr[i].eq(0) for i in range(16) if i != 4]
        m.d.comb += core.init_gpr[4].eq(init_rsp)
        # `running` rises right after the pulse (the core loads one cycle later).
        with m.If(self.start):
            m.d.sync += [started.eq(1), self.cycles.eq(0)]
        with m.Elif(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # --- memory and the debug port -----------------------------------------------------------
        # Paused, the arbiter takes no new access; the ones in its pipeline finish (2 cycles).
        m.d.comb += [mem.dbg_active.eq(~running | pause), self.paused.eq(pause & mem.idle),
                     mem.dbg_addr.eq(self.dbg_addr),
                     mem.dbg_we.eq(self.dbg_we), mem.dbg_wdata.eq(self.dbg_wdata),
                     self.dbg_rdata.eq(mem.dbg_rdata)]
        wiring.connect(m, tu.mem_req, mem.walk_req)
        wiring.connect(m, mem.walk_resp, tu.mem_resp)
        wiring.connect(m, vmx.mem_req, mem.vmx_req)
        wiring.connect(m, mem.vmx_resp, vmx.mem_resp)
        wiring.connect(m, xd.mem_req, mem.bitmap_req)
        wiring.connect(m, mem.bitmap_resp, xd.mem_resp)

        # --- translation context and invalidations ------------------------------------------------
        non_root = vmx.mode == VmxMode.NON_ROOT
        m.d.comb += [tu.ctx.cr0.eq(core.cr0), tu.ctx.cr3.eq(core.cr3), tu.ctx.cr4.eq(core.cr4),
                     tu.ctx.efer.eq(core.efer),
                     tu.ctx.eptp.eq(Mux(non_root, vmx.ctx.eptp, 0)),
                     tu.ctx.ept_enable.eq(non_root & vmx.ctx.ept_enable),
                     tu.ctx.vpid.eq(Mux(non_root, vmx.ctx.vpid, 0))]
        # The VMX unit's invalidations (INVEPT, INVVPID, VPID 0 at entry/exit) and the system
        # unit's (MOV CR, INVLPG, WRMSR EFER) never overlap: each waits on the other's answer.
        with m.If(vmx.inval.valid):
            m.d.comb += [tu.inval.valid.eq(1), tu.inval.payload.eq(vmx.inval.payload),
                         vmx.inval.ready.eq(tu.inval.ready)]
        with m.Else():
            m.d.comb += [tu.inval.valid.eq(su.inval.valid), tu.inval.payload.eq(su.inval.payload),
                         su.inval.ready.eq(tu.inval.ready)]
        m.d.comb += su.vpid.eq(tu.ctx.vpid)

        # --- the core's accesses: translation, then RAM -------------------------------------------
        m.submodules.data_path = dp = DataPath(maxphyaddr=M)
        wiring.connect(m, core.mem_req, dp.core_req)
        wiring.connect(m, dp.core_resp, core.mem_resp)
        wiring.connect(m, dp.xlate_req, tu.req)
        wiring.connect(m, tu.resp, dp.xlate_resp)
        wiring.connect(m, dp.ram_req, mem.data_req)
        wiring.connect(m, mem.data_resp, dp.ram_resp)
        m.d.comb += dp.fetch_flush.eq(core.fetch_flush)

        # --- the system unit -------------------------------------------------------------------
        wiring.connect(m, core.sys_req, su.sys_req)
        wiring.connect(m, su.sys_resp, core.sys_resp)
        m.d.comb += [core.event_pending.eq(su.event_pending), core.non_root.eq(non_root),
                     su.core_exception.eq(core.exception), su.core_rip.eq(core.rip),
                     su.core_rflags.eq(core.rflags), su.core_cr0.eq(core.cr0),
                     su.core_cr3.eq(core.cr3), su.core_cr4.eq(core.cr4),
                     su.core_efer.eq(core.efer),
                     su.core_retiring.eq(core.retiring),
                     su.fault_outcome.eq(dp.fault.outcome), su.fault_gla.eq(dp.fault.gla),
                     su.fault_gpa.eq(dp.fault.gpa),
                     su.fault_qualification.eq(dp.fault.qualification),
                     su.tsc.eq(self.cycles)]
        m.d.comb += [su.core_gpr[i].eq(core.gpr[i]) for i in range(16)]
        m.d.comb += [su.core_rm_val.eq(core.sys_rm_val), su.core_reg_val.eq(core.sys_reg_val)]
        wiring.connect(m, su.vmx_instr, vmx.instr)
        wiring.connect(m, vmx.result, su.vmx_result)
        wiring.connect(m, su.vmx_exit, vmx.exit)
        wiring.connect(m, vmx.exit_resp, su.vmx_exit_resp)
        m.d.comb += [su.vmx_host.eq(vmx.host), su.vmx_entry.eq(vmx.entry),
                     su.vmx_mode.eq(vmx.mode), su.vmx_vmcs.eq(vmx.vmcs),
                     vmx.msr_addr.eq(su.msr_addr), su.msr_value.eq(vmx.msr_value),
                     su.msr_valid.eq(vmx.msr_valid)]
        m.d.comb += xd.vmcs.eq(vmx.vmcs)
        wiring.connect(m, su.query, xd.query)
        wiring.connect(m, xd.decision, su.decision)
        m.d.comb += [timer.load.eq(su.timer_load), timer.load_value.eq(su.timer_load_value),
                     timer.load_active.eq(su.timer_load_active), timer.stop.eq(su.timer_stop),
                     timer.tick.eq(non_root & running), su.timer_expired.eq(timer.expired),
                     su.timer_value.eq(timer.value)]

        # --- how the run ends ------------------------------------------------------------------
        exc = core.exception
        with m.If(running):
            with m.If(su.exit_port & core.halted):     # once the OUT has retired
                m.d.sync += stop.eq(RunStop.EXIT_PORT)
            with m.Elif(core.halted & ~non_root):
                m.d.sync += stop.eq(RunStop.HLT)
            with m.Elif(core.state == CoreState.STOPPED):
                m.d.sync += stop.eq(RunStop.FAULT)
        m.d.comb += [self.fault.vector.eq(exc.vector),
                     self.fault.has_error_code.eq(exc.has_error_code),
                     self.fault.error_code.eq(exc.error_code), self.fault.rip.eq(exc.rip),
                     self.fault.addr.eq(exc.addr)]

        # --- outputs -----------------------------------------------------------------------------
        m.d.comb += [
            self.exit_code.eq(su.exit_code),
            self.console_valid.eq(su.console_valid), self.console_data.eq(su.console_data),
            self.instructions.eq(core.retired_count),
            self.retired.eq(core.retired), self.retired_rip.eq(core.retired_rip),
            self.retired_len.eq(core.retired_len), self.retired_bytes.eq(core.retired_bytes),
            self.vm_entry.eq(su.vm_entry), self.vm_exit.eq(su.vm_exit),
            self.vm_entry_failure.eq(su.vm_entry_failure),
            self.vm_exit_reason.eq(su.vm_exit_reason),
            self.vm_exit_qualification.eq(su.vm_exit_qualification),
            self.rip.eq(core.rip), self.rflags.eq(core.rflags), self.cr0.eq(core.cr0),
            self.cr3.eq(core.cr3), self.cr4.eq(core.cr4), self.efer.eq(core.efer),
            self.vmx_mode.eq(vmx.mode), self.current_vmcs.eq(vmx.current_vmcs),
        ]
        m.d.comb += [self.gpr[i].eq(core.gpr[i]) for i in range(16)]
        return m
