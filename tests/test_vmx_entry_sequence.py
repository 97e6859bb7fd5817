"""`rtl.vmx.entry_sequence.EntrySequence` in Amaranth's simulator against the model.

Random entry vectors (`tb.vmx_entry_checks_tb.random_vector`: valid starting VMCSs with random
changes, and valid 32-bit guests with PAE paging, EPT on or off; some of the others turned into
PAE guests; CR3 random) with a memory holding the link
pointer's revision dword and four PDPTEs at CR3[31:5] (valid or with a reserved bit set), served
with random delays. For each (`VTX_ENTRY_SEQ_CASES`, default 200): the verdict and qualification
must be the model's (`model_verdict`: the control, host and guest checks; then
`VmxModel._load_pdptes` for a PAE guest, qualification 2 for a bad PDPTE); the sequence reads the
link pointer's dword only when the checks need it and the four PDPTEs only for a PAE guest
without EPT whose checks passed, at the model's addresses, and hands those PDPTEs out; ``busy``
from the cycle after ``start`` to ``done``, one ``done`` per start, within a watchdog.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import (
    CR0_PG,
    CR4_PAE,
    ENTRY_CTL_IA32E_MODE_GUEST,
    MAXPHYADDR,
    PROC2_ENABLE_EPT,
)
from rtl.vmx.entry_sequence import EntryOutcome, EntrySequence
from rtl.vmx.layouts import EntryCheckKind
from tb.model.vmx import Memory, Vmcs, VmxModel
from tb.vmx_entry_checks_tb import (
    base_vector,
    cpu_bits,
    full_fields,
    link_read_needed,
    model_verdict,
    random_vector,
    vmcs_bits,
)

SEED = int(os.environ.get("VTX_SEED", "1"))
CASES = int(os.environ.get("VTX_ENTRY_SEQ_CASES", "200"))
WATCHDOG = 200
_U64 = (1 << 64) - 1


def _pdpte(rng):
    """A PAE PDPTE: not present, present and valid, or present with a reserved bit."""
    value = rng.getrandbits(64)
    kind = rng.random()
    if kind < 0.2:
        return value & ~1
    if kind < 0.85:
        return (value | 1) & ~0b110 & ~(0xF << 5) & ((1 << MAXPHYADDR) - 1)
    return value | 1 | (1 << rng.choice((1, 2, 5, 6, 7, 8, MAXPHYADDR, 63)))


def _case(rng):
    if rng.random() < 0.4:          # a valid 32-bit guest with PAE paging, EPT on or off
        vec = base_vector("32")
        vec.fields["GUEST_CR0"] |= CR0_PG
        vec.fields["GUEST_CR4"] |= CR4_PAE
        if rng.random() < 0.7:
            vec.fields["SECONDARY_VM_EXEC_CONTROL"] &= ~PROC2_ENABLE_EPT
    else:
        vec = random_vector(rng)
    f = vec.fields
    if rng.random() < 0.3:          # a PAE guest (the checks may or may not accept it)
        f["GUEST_CR0"] |= CR0_PG
        f["GUEST_CR4"] |= CR4_PAE
        f["VM_ENTRY_CONTROLS"] &= ~ENTRY_CTL_IA32E_MODE_GUEST
    if rng.random() < 0.7:
        f["GUEST_CR3"] = rng.getrandbits(32)
    for i in range(4):
        if rng.random() < 0.5:
            f[f"GUEST_PDPTR{i}"] = _pdpte(rng)
    vec.fields = full_fields(f)
    memory = {(f["GUEST_CR3"] & 0xFFFF_FFE0) + 8 * i: _pdpte(rng) for i in range(4)}
    link = f["VMCS_LINK_POINTER"]
    if link_read_needed(f):
        memory[link & ~7] = rng.getrandbits(32) << 32 | vec.link_revision
    return vec, memory


def _expected(vec, memory):
    """(outcome, qualification, PDPTEs read from memory or None) as the model decides."""
    verdict = model_verdict(vec)
    if verdict.kind is EntryCheckKind.CONTROLS:
        return EntryOutcome.CONTROLS, 0, None
    if verdict.kind is EntryCheckKind.HOST:
        return EntryOutcome.HOST, 0, None
    if verdict.kind is EntryCheckKind.GUEST:
        return EntryOutcome.GUEST, verdict.qualification, None
    model_memory = Memory()
    for addr, value in memory.items():
        model_memory.write(addr, value)
    vmcs = Vmcs(dict(vec.fields))
    pdptes, problem = VmxModel(model_memory)._load_pdptes(vmcs)
    from_memory = pdptes is not None and not vmcs.proc2 & PROC2_ENABLE_EPT
    if problem is not None:
        return EntryOutcome.GUEST, problem[0], "bad"
    return EntryOutcome.ENTERED, 0, pdptes if from_memory else None


def _pae(fields):
    return bool(fields["GUEST_CR0"] & CR0_PG and fields["GUEST_CR4"] & CR4_PAE
                and not fields["VM_ENTRY_CONTROLS"] & ENTRY_CTL_IA32E_MODE_GUEST)


def test_verdicts_reads_and_pdptes_match_the_model():
    rng = random.Random(SEED)
    cases = [_case(rng) for _ in range(CASES)]
    dut = EntrySequence()
    seen = {o: 0 for o in EntryOutcome}
    pdpte_reads = 0

    async def bench(ctx):
        nonlocal pdpte_reads
        for n, (vec, memory) in enumerate(cases):
            want = _expected(vec, memory)
            f = vec.fields
            ept = bool(Vmcs(dict(f)).proc2 & PROC2_ENABLE_EPT)
            ctx.set(dut.vmcs.as_value(), vmcs_bits(f))
            ctx.set(dut.cpu.as_value(), cpu_bits(vec.cpu))
            ctx.set(dut.current_vmcs, vec.current_vmcs)
            ctx.set(dut.pae, int(_pae(f)))
            ctx.set(dut.ept_enabled, int(ept))
            ctx.set(dut.start, 1)
            reads, pending = [], []
            for cycle in range(WATCHDOG):
                ready = int(rng.random() < 0.7)
                ctx.set(dut.read_req.ready, ready)
                ctx.set(dut.read_resp.valid, int(bool(pending) and pending[0][0] <= 0))
                if pending:
                    ctx.set(dut.read_resp.payload, pending[0][1])
                assert ctx.get(dut.busy) == (cycle > 0), f"case {n} cycle {cycle}: busy"
                if ctx.get(dut.read_req.valid) and ready:
                    addr = ctx.get(dut.read_req.payload)
                    reads.append(addr)
                    pending.append([rng.randrange(0, 3), memory.get(addr, 0)])
                if ctx.get(dut.read_resp.valid) and ctx.get(dut.read_resp.ready):
                    pending.pop(0)
                for p in pending:
                    p[0] -= 1
                done = ctx.get(dut.done)
                outcome, qual = ctx.get(dut.outcome), ctx.get(dut.qualification)
                await ctx.tick()
                ctx.set(dut.start, 0)
                if done:
                    break
            else:
                raise AssertionError(f"case {n} ({vec.name}): no verdict in {WATCHDOG} cycles")
            assert not ctx.get(dut.busy) and not pending
            got = (outcome, qual)
            assert got == want[:2], f"case {n} ({vec.name}): {got}, model {want[:2]}"
            seen[outcome] += 1
            link = [f["VMCS_LINK_POINTER"]] if link_read_needed(f) else []
            table = f["GUEST_CR3"] & 0xFFFF_FFE0
            from_memory = (want[0] is EntryOutcome.ENTERED and want[2] is not None) or (
                want[2] == "bad" and not ept)
            pdpte_addrs = [table + 8 * i for i in range(4)] if from_memory else []
            assert reads == link + pdpte_addrs, f"case {n}: reads {[hex(a) for a in reads]}"
            if pdpte_addrs:
                pdpte_reads += 1
                got_pdptes = ctx.get(dut.pdptes)
                assert [got_pdptes >> (64 * i) & _U64 for i in range(4)] == \
                    [memory[a] for a in pdpte_addrs]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert all(seen[o] for o in EntryOutcome), seen
    assert pdpte_reads > CASES // 20, pdpte_reads
