"""A VM entry's checks, from the decision to the verdict (SDM 26.2-26.3).

After the instruction decision has passed VMLAUNCH/VMRESUME (the launch-state checks), an entry
is checked in this order: the revision dword of the VMCS-link pointer's region is read when the
checks need it (`VmEntryChecks.link_read_needed`); `VmEntryChecks` decides the control, host and
guest groups; then, for a guest with PAE paging (`GuestStateLoad.pae`), the four PDPTEs are
checked: with EPT the VMCS's GUEST_PDPTR0-3, without EPT four qwords read from memory at
CR3[31:5] (32-byte aligned, so no carry into bit 5), which the guest then runs with (``pdptes``).

Verdicts (``outcome``, `EntryOutcome`): CONTROLS (VMfailValid 7), HOST (VMfailValid 8),
GUEST (a VM-entry failure, ``qualification`` 0 or 4 from the checks, 2 for a PDPTE), ENTERED.

Ports
-----
``start`` (in): begin (from the next cycle; the checks themselves start in this very cycle when
no link read is needed). ``cpu`` (in, `CPU_STATE_LAYOUT`): the instruction's processor state,
valid in the start cycle and in every cycle after it until ``done``. ``vmcs`` (in), ``current_vmcs``
(in): the working copy and the current-VMCS pointer, stable from ``start`` to ``done``.
``pae`` (in): the guest uses PAE paging; ``ept_enabled`` (in): EPT is on.
``read_req`` (out, stream of qword addresses), ``read_resp`` (in, stream of qwords): reads on
the VMX unit's memory port, while ``busy``; responses in order.
``busy`` (out): the sequence runs. ``done`` (out): the verdict is ``outcome`` and
``qualification`` in this cycle.
``pdptes`` (out, 4 x 64): the PDPTEs read from memory (held after ``done``).

Timing
------
``start`` in cycle t, no link read: ``done`` in t + `VmEntryChecks.LATENCY` (+1 for the PDPTE
check of a PAE guest, + the four reads without EPT). With a link read: the read's request from
t+1, the checks start the cycle after its response.
"""



from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import ENTRY_FAIL_PDPTE, MAXPHYADDR, VMCS_REVISION_ID
from rtl.vmx.entry_checks import VmEntryChecks, pdpte_ok
from rtl.vmx.layouts import CPU_STATE_LAYOUT, WORKING_LAYOUT, EntryCheckKind

__all__ = ["EntryOutcome", "EntrySequence"]


class EntryOutcome(enum.Enum, shape=2):
    CONTROLS = 0    # VMfailValid, error 7
    HOST = 1        # VMfailValid, error 8
    GUEST = 2       # VM-entry failure (exit reason 0x80000021) with `qualification`
    ENTERED = 3


class EntrySequence(wiring.Component):
    def __init__(self, *, maxphyaddr: int = MAXPHYADDR, revision_id: int = VMCS_REVISION_ID):
        self.maxphyaddr = maxphyaddr
        self.revision_id = revision_id
        super().__init__({
            "start": In(1),
            "cpu": In(CPU_STATE_LAYOUT),
            "vmcs": In(WORKING_LAYOUT),
            "current_vmcs": In(64),
            "pae": In(1),
            "ept_enabled": In(1),
            "read_req": Out(stream.Signature(maxphyaddr)),
            "read_resp": In(stream.Signature(64)),
            "busy": Out(1),
            "done": Out(1),
            "outcome": Out(EntryOutcome),
            "qualification": Out(3),
            "pdptes": Out(4 * 64),
        })

    def elaborate(self, platform):
        m = Module()
        mpa = self.maxphyaddr
        req, resp = self.read_req, self.read_resp
        m.submodules.checks = checks = VmEntryChecks(maxphyaddr=mpa,
                                                     revision_id=self.revision_id)
        link_rev = Signal(32)
        m.d.comb += [checks.vmcs.eq(self.vmcs), checks.cpu.eq(self.cpu),
                     checks.link_revision.eq(link_rev),
                     checks.current_vmcs.eq(self.current_vmcs)]
        pdptes = [self.pdptes[64 * i:64 * (i + 1)] for i in range(4)]
        pd_ok = Signal()
        m.d.comb += pd_ok.eq(Cat(*(
            pdpte_ok(Mux(self.ept_enabled, self.vmcs[f"guest_pdptr{i}"], pdptes[i]), mpa)
            for i in range(4))).all())
        cnt = Signal(3)         # PDPTE reads issued
        rcnt = Signal(2)        # PDPTE reads answered

        def verdict(outcome, qual=0):
            m.d.comb += [self.done.eq(1), self.outcome.eq(outcome), self.qualification.eq(qual)]

        with m.FSM(name="entry"):
            with m.State("IDLE"):
                with m.If(self.start):
                    with m.If(checks.link_read_needed):
                        m.next = "LINK_REQ"
                    with m.Else():
                        m.d.comb += checks.start.eq(1)
                        m.next = "CHECKS"
            with m.State("LINK_REQ"):
                m.d.comb += [self.busy.eq(1), req.valid.eq(1),
                             req.payload.eq(checks.link_addr[0:mpa])]
                with m.If(req.ready):
                    m.next = "LINK_RESP"
            with m.State("LINK_RESP"):
                m.d.comb += [self.busy.eq(1), resp.ready.eq(1)]
                with m.If(resp.valid):
                    m.d.sync += link_rev.eq(resp.payload[0:32])
                    m.next = "LINK_START"
            with m.State("LINK_START"):
                m.d.comb += [self.busy.eq(1), checks.start.eq(1)]
                m.next = "CHECKS"
            with m.State("CHECKS"):
                m.d.comb += self.busy.eq(1)
                with m.If(checks.done):
                    kind = checks.result.kind
                    with m.If(kind == EntryCheckKind.CONTROLS):
                        verdict(EntryOutcome.CONTROLS)
                        m.next = "IDLE"
                    with m.Elif(kind == EntryCheckKind.HOST):
                        verdict(EntryOutcome.HOST)
                        m.next = "IDLE"
                    with m.Elif(kind == EntryCheckKind.GUEST):
                        verdict(EntryOutcome.GUEST, checks.result.qualification)
                        m.next = "IDLE"
                    with m.Elif(self.pae & ~self.ept_enabled):
                        m.d.sync += [cnt.eq(0), rcnt.eq(0)]
                        m.next = "PDPTE"
                    with m.Else():
                        m.next = "PDPTE_CHECK"
            with m.State("PDPTE"):
                m.d.comb += self.busy.eq(1)
                with m.If(cnt < 4):
                    m.d.comb += [req.valid.eq(1),
                                 req.payload.eq(Cat(Const(0, 3), cnt[0:2],
                                                    self.vmcs.guest_cr3[5:32]))]
                    with m.If(req.ready):
                        m.d.sync += cnt.eq(cnt + 1)
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    m.d.sync += rcnt.eq(rcnt + 1)
                    for i in range(4):
                        with m.If(rcnt == i):
                            m.d.sync += pdptes[i].eq(resp.payload)
                    with m.If(rcnt == 3):
                        m.next = "PDPTE_CHECK"
            with m.State("PDPTE_CHECK"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.pae & ~pd_ok):
                    verdict(EntryOutcome.GUEST, ENTRY_FAIL_PDPTE)
                with m.Else():
                    verdict(EntryOutcome.ENTERED)
                m.next = "IDLE"
        return m
