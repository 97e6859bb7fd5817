"""cocotb tests of the VMX unit (`rtl.vmx.unit.VmxUnit`, Verilog top ``vmx_unit``), every step
checked against `tb.model.vmx.VmxModel` by `tb.vmx_tb.VmxTB` (result, error, flags, exit
reason/qualification, value, invalidation requests, mode and pointers, the whole working copy of
the current VMCS, and the memory image of every region the model does not hold active).

Run through tests/test_vmx_rtl.py (sim.flow builds and caches the Verilator model). Environment:
VTX_SEED (default 1), VTX_VMX_OPS (random differential length, default 3000).
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from rtl.arch.vmx import (
    CR0_PE,
    CR4_VMXE,
    EFER_LMA,
    EXIT_SAVED_GUEST_FIELDS,
    FIELD_BY_NAME,
    FIELDS,
    INVALID_VMCS_POINTER,
    MAXPHYADDR,
    RFLAGS_VM,
    VMCS_FIELDS_OFFSET,
    VMCS_SLOT_BYTES,
    FieldWidth,
    VmInstructionError,
    VmxOp,
    VmxResult,
)
from rtl.vmx.ports import INSTR_LAYOUT, RESULT_LAYOUT
from rtl.vmx.unit import VmxUnit
from rtl.vmx.vmcs_cache import field_row
from tb.model.vmx import CpuState, Operands, example_vmcs_fields
from tb.structs import pack, unpack
from tb.vmx_tb import VmxTB, cpu_fields

FACTORY = VmxUnit
TOPLEVEL = "vmx_unit"
PARAMS: dict = {}

E = VmInstructionError
R = VmxResult
OP = VmxOp

VMXON_REGION = 0x1000
VMCS_BASE = 0x10000          # VMCS regions at VMCS_BASE + i * 0x1000
BAD_REV_REGION = 0x30000
SHADOW_REGION = 0x31000


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def start(dut, **kw) -> VmxTB:
    tb = VmxTB(dut, seed=env_int("VTX_SEED", 1), **kw)
    await tb.start()
    tb.region(VMXON_REGION)
    for i in range(8):
        tb.region(VMCS_BASE + 0x1000 * i)
    tb.region(BAD_REV_REGION, revision=0x1234)
    tb.region(SHADOW_REGION, shadow=True)
    return tb


def vmcs_addr(i: int) -> int:
    return VMCS_BASE + 0x1000 * i


def enc(name: str, high: bool = False) -> int:
    return FIELD_BY_NAME[name].encoding | int(high)


async def expect(tb, op, cpu=None, o=None, *, kind=None, error=None, what=""):
    exp, res, cycles = await tb.step(op, cpu, o, what=what)
    if kind is not None and exp.kind is not kind:
        tb.fail(f"{what or op}: model gives {exp!r}, test expects {kind}")
    if error is not None and exp.error is not error:
        tb.fail(f"{what or op}: model gives {exp!r}, test expects error {error}")
    return exp, res, cycles


async def vmxon(tb, addr=VMXON_REGION):
    return await expect(tb, OP.VMXON, o=Operands(mem=addr), kind=R.SUCCEED)


async def load(tb, addr):
    await expect(tb, OP.VMCLEAR, o=Operands(mem=addr), kind=R.SUCCEED)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=addr), kind=R.SUCCEED)


async def vmwrite(tb, name, value, high=False, kind=R.SUCCEED):
    return await expect(tb, OP.VMWRITE, o=Operands(reg=enc(name, high), value=value), kind=kind)


async def vmread(tb, name, high=False):
    exp, res, _ = await expect(tb, OP.VMREAD, o=Operands(reg=enc(name, high)), kind=R.SUCCEED)
    return exp.value


# =================================================================================================
# Directed tests
# =================================================================================================


@cocotb.test()
async def instruction_errors(dut):
    """Every VM-instruction error the instructions themselves raise, VMfailInvalid, #UD, #GP."""
    tb = await start(dut)
    cpu = CpuState()
    # Outside VMX operation: #UD for everything but VMXON (and VMFUNC: #UD too).
    for op in OP:
        if op is not OP.VMXON:
            await expect(tb, op, o=Operands(mem=vmcs_addr(0)), kind=R.UD)
    # VMXON #UD / #GP paths.
    await expect(tb, OP.VMXON, CpuState(cr4=CpuState().cr4 & ~CR4_VMXE), Operands(mem=VMXON_REGION),
                 kind=R.UD)
    await expect(tb, OP.VMXON, o=Operands(mem=VMXON_REGION, register_operand=True), kind=R.UD)
    await expect(tb, OP.VMXON, CpuState(cpl=3), Operands(mem=VMXON_REGION), kind=R.GP)
    await expect(tb, OP.VMXON, CpuState(feature_control=0), Operands(mem=VMXON_REGION), kind=R.GP)
    await expect(tb, OP.VMXON, CpuState(cr0=CpuState().cr0 | (1 << 40)),
                 Operands(mem=VMXON_REGION), kind=R.GP)
    # VMfailInvalid: bad VMXON pointer / revision.
    await expect(tb, OP.VMXON, o=Operands(mem=VMXON_REGION + 8), kind=R.FAIL_INVALID)
    await expect(tb, OP.VMXON, o=Operands(mem=1 << MAXPHYADDR), kind=R.FAIL_INVALID)
    await expect(tb, OP.VMXON, o=Operands(mem=BAD_REV_REGION), kind=R.FAIL_INVALID)
    await vmxon(tb)
    # No current VMCS: VMfailInvalid.
    await expect(tb, OP.VMREAD, o=Operands(reg=enc("GUEST_RIP")), kind=R.FAIL_INVALID)
    await expect(tb, OP.VMXON, o=Operands(mem=VMXON_REGION), kind=R.FAIL_INVALID)
    await expect(tb, OP.VMPTRST, kind=R.SUCCEED)
    await expect(tb, OP.VMCALL, kind=R.FAIL_INVALID)
    # #UD / #GP in root operation.
    await expect(tb, OP.VMREAD, CpuState(cpl=3), Operands(reg=enc("GUEST_RIP")), kind=R.GP)
    await expect(tb, OP.VMREAD, CpuState(rflags=CpuState().rflags | RFLAGS_VM), kind=R.UD)
    await expect(tb, OP.VMREAD, CpuState(cs_l=False), kind=R.UD)
    await expect(tb, OP.VMCLEAR, CpuState(cr0=CpuState().cr0 & ~CR0_PE), kind=R.UD)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(0), register_operand=True), kind=R.UD)
    await load(tb, vmcs_addr(0))
    # Now VMfailValid with the error number.
    await expect(tb, OP.VMXON, o=Operands(mem=VMXON_REGION), error=E.VMXON_IN_ROOT)
    await expect(tb, OP.VMCALL, error=E.VMCALL_IN_ROOT)
    await expect(tb, OP.VMCLEAR, o=Operands(mem=vmcs_addr(1) + 4), error=E.VMCLEAR_INVALID_ADDRESS)
    await expect(tb, OP.VMCLEAR, o=Operands(mem=VMXON_REGION), error=E.VMCLEAR_VMXON_POINTER)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=1 << 45), error=E.VMPTRLD_INVALID_ADDRESS)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=VMXON_REGION), error=E.VMPTRLD_VMXON_POINTER)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=BAD_REV_REGION),
                 error=E.VMPTRLD_INCORRECT_REVISION)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=SHADOW_REGION),
                 error=E.VMPTRLD_INCORRECT_REVISION)
    await expect(tb, OP.VMREAD, o=Operands(reg=0x7FFF), error=E.UNSUPPORTED_VMCS_COMPONENT)
    await expect(tb, OP.VMREAD, o=Operands(reg=enc("GUEST_RIP") | 1),
                 error=E.UNSUPPORTED_VMCS_COMPONENT)
    await expect(tb, OP.VMREAD, o=Operands(reg=1 << 32 | enc("GUEST_RIP")),
                 error=E.UNSUPPORTED_VMCS_COMPONENT)
    await expect(tb, OP.VMWRITE, o=Operands(reg=enc("VM_EXIT_REASON"), value=5),
                 error=E.VMWRITE_READ_ONLY_COMPONENT)
    await expect(tb, OP.VMWRITE, o=Operands(reg=0x1000 | enc("GUEST_RIP"), value=5),
                 error=E.UNSUPPORTED_VMCS_COMPONENT)
    await expect(tb, OP.VMLAUNCH, CpuState(mov_ss_blocking=True),
                 error=E.ENTRY_EVENTS_BLOCKED_BY_MOV_SS)
    await expect(tb, OP.VMRESUME, error=E.VMRESUME_NONLAUNCHED_VMCS)
    await expect(tb, OP.INVEPT, o=Operands(reg=3), error=E.INVALID_INVEPT_INVVPID_OPERAND)
    await expect(tb, OP.INVEPT, o=Operands(reg=1, mem=0x1000 | 7),
                 error=E.INVALID_INVEPT_INVVPID_OPERAND)
    await expect(tb, OP.INVVPID, o=Operands(reg=4), error=E.INVALID_INVEPT_INVVPID_OPERAND)
    await expect(tb, OP.INVVPID, o=Operands(reg=1, mem=0), error=E.INVALID_INVEPT_INVVPID_OPERAND)
    await expect(tb, OP.INVVPID, o=Operands(reg=1, mem=1 << 20),
                 error=E.INVALID_INVEPT_INVVPID_OPERAND)
    await expect(tb, OP.INVVPID, o=Operands(reg=0, mem=1 | (1 << 127)),
                 error=E.INVALID_INVEPT_INVVPID_OPERAND)
    # Successful INVEPT / INVVPID of every type (the invalidation requests are compared).
    await expect(tb, OP.INVEPT, o=Operands(reg=1, mem=0x5000 | 0x1E), kind=R.SUCCEED)
    await expect(tb, OP.INVEPT, o=Operands(reg=2), kind=R.SUCCEED)
    for t in range(4):
        await expect(tb, OP.INVVPID, o=Operands(reg=t, mem=5 | 0x1234 << 64), kind=R.SUCCEED)
    # VMFUNC in root operation: #UD.
    await expect(tb, OP.VMFUNC, kind=R.UD)
    # A 32-bit-mode encoding: bits 63:32 of the register are ignored.
    cpu32 = CpuState(efer=0, cs_l=False)
    await expect(tb, OP.VMREAD, cpu32, Operands(reg=1 << 32 | enc("GUEST_RIP")), kind=R.SUCCEED)


@cocotb.test()
async def must_rows(dut):
    """A successful instruction leaves the error field alone; high access of 64-bit fields;
    operand-size masking; VMCLEAR makes the data visible in memory; VMPTRST."""
    tb = await start(dut)
    await vmxon(tb)
    a = vmcs_addr(0)
    await load(tb, a)
    await expect(tb, OP.VMCALL, error=E.VMCALL_IN_ROOT)
    await vmwrite(tb, "GUEST_RIP", 0x1234)
    if await vmread(tb, "VM_INSTRUCTION_ERROR") != 1:
        tb.fail("a successful VMWRITE changed the error field")
    await vmwrite(tb, "EPT_POINTER", 0x1111_2222_3333_4444)
    await vmwrite(tb, "EPT_POINTER", 0xAAAA_BBBB, high=True)
    if await vmread(tb, "EPT_POINTER", high=True) != 0xAAAA_BBBB:
        tb.fail("high access")
    if await vmread(tb, "EPT_POINTER") != 0xAAAA_BBBB_3333_4444:
        tb.fail("high write kept the low half")
    await vmwrite(tb, "GUEST_ES_SELECTOR", 0x1_2345)       # truncated to 16 bits
    cpu32 = CpuState(efer=0, cs_l=False)
    await expect(tb, OP.VMWRITE, cpu32,
                 Operands(reg=enc("GUEST_RSP"), value=tb.rng.getrandbits(64)), kind=R.SUCCEED)
    await expect(tb, OP.VMPTRST, kind=R.SUCCEED)
    await expect(tb, OP.VMCLEAR, o=Operands(mem=a), kind=R.SUCCEED)
    # Visible in memory (hand-written expectation as well as the model's image).
    if tb.mem.read(a + VMCS_FIELDS_OFFSET + VMCS_SLOT_BYTES * FIELD_BY_NAME["GUEST_RIP"].slot) \
            != 0x1234:
        tb.fail("VMCLEAR did not write GUEST_RIP to the region")
    if tb.mem.read(a + 8) != 0:
        tb.fail("VMCLEAR did not write the launch state")
    await expect(tb, OP.VMPTRST, kind=R.SUCCEED)
    await expect(tb, OP.VMREAD, o=Operands(reg=enc("GUEST_RIP")), kind=R.FAIL_INVALID)


@cocotb.test()
async def cache_behaviour(dut):
    """Two VMCSs keep their values across VMPTRLD switches; more live VMCSs than slots (eviction
    with write-back, reload); VMCLEAR of a cached, non-current VMCS flushes it to memory; a
    VMPTRLD of a cached VMCS with a bad revision identifier leaves the current one."""
    tb = await start(dut)
    await vmxon(tb)
    n = 7
    for i in range(n):
        await load(tb, vmcs_addr(i))
        await vmwrite(tb, "GUEST_RIP", 0x1000 + i)
        await vmwrite(tb, "GUEST_RSP", 0x2000 + i)
    for rounds in range(3):
        for i in list(range(n)) + [0, 1, 0, 1, 6, 2]:
            await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(i)), kind=R.SUCCEED)
            if await vmread(tb, "GUEST_RIP") != 0x1000 + i:
                tb.fail(f"VMCS {i} lost GUEST_RIP")
            await vmwrite(tb, "GUEST_RSP", 0x3000 + 16 * rounds + i)
    # VMCLEAR of a non-current cached VMCS, then of every one.
    await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(2)), kind=R.SUCCEED)
    for i in range(n):
        await expect(tb, OP.VMCLEAR, o=Operands(mem=vmcs_addr(i)), kind=R.SUCCEED)
    tb.check_memory("after VMCLEAR of all")
    for i in range(n):
        a = vmcs_addr(i) + VMCS_FIELDS_OFFSET + VMCS_SLOT_BYTES * FIELD_BY_NAME["GUEST_RIP"].slot
        if tb.mem.read(a) != 0x1000 + i:
            tb.fail(f"VMCS {i}: GUEST_RIP not in memory after VMCLEAR")
    # A VMPTRLD of a cached VMCS whose region lost its revision identifier fails (error 11)
    # after the copy into the working copy has begun: the current VMCS stays, working copy
    # included (compared with the model after every step).
    one_per_row = {field_row(f.slot): f for f in FIELDS if not f.read_only}
    for i in (4, 5):
        await load(tb, vmcs_addr(i))
        for f in one_per_row.values():
            await vmwrite(tb, f.name, i << 12 | f.slot)
        await vmwrite(tb, "GUEST_RIP", 0xB0 + i)
    tb.region(vmcs_addr(4), revision=0x1234)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(4)), kind=R.FAIL_VALID,
                 error=E.VMPTRLD_INCORRECT_REVISION)
    if await vmread(tb, "GUEST_RIP") != 0xB5:
        tb.fail("a failed VMPTRLD changed the current VMCS")
    tb.region(vmcs_addr(4))
    await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(4)), kind=R.SUCCEED)
    if await vmread(tb, "GUEST_RIP") != 0xB4:
        tb.fail("VMCS 4 lost GUEST_RIP")
    # VMXOFF keeps the cache; VMXON and VMPTRLD again.
    await load(tb, vmcs_addr(3))
    await vmwrite(tb, "GUEST_RIP", 0x77)
    await expect(tb, OP.VMXOFF, kind=R.SUCCEED)
    await vmxon(tb)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(3)), kind=R.SUCCEED)
    if await vmread(tb, "GUEST_RIP") != 0x77:
        tb.fail("VMCS lost across VMXOFF/VMXON")


@cocotb.test()
async def back_to_back(dut):
    """VMREAD and VMWRITE take one cycle each and run back to back: N instructions offered in
    consecutive cycles are all accepted and answered in N + 1 cycles."""
    tb = await start(dut, result_ready=1.0)
    await vmxon(tb)
    await load(tb, vmcs_addr(0))
    names = [f.name for f in FIELDS if not f.read_only][:40]
    cpu = CpuState()
    ops = []
    for i, name in enumerate(names):
        ops.append((OP.VMWRITE, Operands(reg=enc(name), value=0x100 + i)))
        ops.append((OP.VMREAD, Operands(reg=enc(name))))
    expected = [tb.model.execute(op, cpu, o) for op, o in ops]
    dut.result__ready.value = 1
    results = []
    first = last = None
    idx = 0
    await RisingEdge(dut.clk)
    while len(results) < len(ops):
        if idx < len(ops):
            op, o = ops[idx]
            dut.instr__payload.value = pack(INSTR_LAYOUT, op=op, precheck=0, register_operand=0,
                                            mem=0, reg=o.reg, value=o.value, qualification=0,
                                            cpu=cpu_fields(cpu))
            dut.instr__valid.value = 1
        else:
            dut.instr__valid.value = 0
        dut.result__ready.value = 1
        await ReadOnly()
        if int(dut.result__valid.value):
            results.append(unpack(RESULT_LAYOUT, int(dut.result__payload.value)))
            last = tb.cycle
        if idx < len(ops) and int(dut.instr__ready.value):
            if first is None:
                first = tb.cycle
            idx += 1
        await RisingEdge(dut.clk)
        if tb.cycle - (first or tb.cycle) > 10 * len(ops):
            tb.fail("watchdog: back-to-back run stalled")
    dut.instr__valid.value = 0
    for i, (res, exp) in enumerate(zip(results, expected)):
        tb.compare(f"back-to-back #{i}", res, exp)
    tb.check_state("back-to-back")
    total = last - first
    tb.log.info(f"{len(ops)} VMREAD/VMWRITE in {total} cycles")
    if total != len(ops):
        tb.fail(f"{len(ops)} back-to-back VMREAD/VMWRITE took {total} cycles, not {len(ops)}")


# =================================================================================================
# Random differential test
# =================================================================================================

#: Which ops the random test issues, with weights.
RANDOM_OPS = [
    (OP.VMREAD, 20), (OP.VMWRITE, 20), (OP.VMPTRLD, 10), (OP.VMCLEAR, 6), (OP.VMPTRST, 2),
    (OP.VMXON, 2), (OP.VMXOFF, 1), (OP.VMCALL, 2), (OP.INVEPT, 3), (OP.INVVPID, 3),
    (OP.VMFUNC, 1), (OP.VMLAUNCH, 2), (OP.VMRESUME, 2),
]


def random_cpu(rng: random.Random) -> CpuState:
    cpu = CpuState()
    if rng.random() < 0.85:
        return cpu
    k = rng.randrange(9)
    if k == 0:
        cpu.cpl = rng.randrange(1, 4)
    elif k == 1:
        cpu.cr0 &= ~CR0_PE
    elif k == 2:
        cpu.rflags |= RFLAGS_VM
    elif k == 3:
        cpu.cs_l = False
    elif k == 4:
        cpu.cr4 &= ~CR4_VMXE
    elif k == 5:
        cpu.feature_control = rng.choice([0, 1, 4])
    elif k == 6:
        cpu.efer &= ~EFER_LMA
        cpu.cs_l = False
    elif k == 7:
        cpu.cr0 |= 1 << rng.choice([32, 40, 63])
    else:
        cpu.mov_ss_blocking = True
    return cpu


def random_pointer(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.75:
        return vmcs_addr(rng.randrange(8))
    if r < 0.82:
        return VMXON_REGION
    if r < 0.88:
        return rng.choice([BAD_REV_REGION, SHADOW_REGION])
    if r < 0.94:
        return vmcs_addr(rng.randrange(8)) + rng.choice([4, 8, 0x800])
    return rng.choice([1 << MAXPHYADDR, 1 << 63, INVALID_VMCS_POINTER & ~0xFFF])


def random_encoding(rng: random.Random) -> int:
    r = rng.random()
    f = rng.choice(FIELDS)
    if r < 0.8:
        return f.encoding
    if r < 0.88:
        return f.encoding | 1
    if r < 0.94:
        return f.encoding | rng.choice([1 << 12, 1 << 15, 1 << 31, 1 << 32, 1 << 63])
    return rng.getrandbits(16)


def random_value(rng: random.Random) -> int:
    return rng.choice([rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(8), 0,
                       (1 << 64) - 1])


def random_operands(rng: random.Random, op: OP) -> Operands:
    o = Operands(qualification=rng.getrandbits(64) if rng.random() < 0.3 else 0,
                 register_operand=rng.random() < 0.03)
    if op in (OP.VMXON, OP.VMCLEAR, OP.VMPTRLD):
        o.mem = random_pointer(rng)
        if op is OP.VMXON and rng.random() < 0.5:
            o.mem = VMXON_REGION
    elif op in (OP.VMREAD, OP.VMWRITE):
        o.reg = random_encoding(rng)
        o.value = random_value(rng)
    elif op is OP.INVEPT:
        o.reg = rng.choice([1, 1, 2, 2, 0, 3, 1 << 32 | 1])
        o.mem = rng.choice([0x5000 | 0x1E, 0x5000 | 0x18, 0x5000 | 0x06, rng.getrandbits(128)])
    elif op is OP.INVVPID:
        o.reg = rng.choice([0, 1, 2, 3, 4, 1 << 32 | 1])
        o.mem = rng.choice([1, 5, 0, 1 << 20, rng.getrandbits(16)]) | \
            rng.choice([0x1234, 1 << 47, (1 << 64) - 1 << 47 & ((1 << 64) - 1), 1 << 50]) << 64
    elif op is OP.VMFUNC:
        o.reg = rng.choice([0, 0, 0, 1, 64, 1 << 32])
        o.value = rng.choice([0, 1, 2, 3, 511, 512, 1 << 32 | 1])
    return o


EXIT_REASONS = [0, 1, 2, 7, 10, 12, 14, 18, 23, 25, 28, 30, 31, 32, 37, 48, 49, 52, 59]


def random_example(rng: random.Random) -> dict:
    """A VMCS that passes the entry checks, in one of its variants (EPT/VPID on or off, PAE),
    with a few fields perturbed (one bit flipped or a random value) so that some entries fail."""
    from rtl.arch.vmx import AR_DB, AR_G, AR_P, AR_S, CR4_PAE, ENTRY_CTL_TRUE_DEFAULT1, \
        VMX_CR0_FIXED0, VMX_CR4_FIXED0
    f = {fl.name: 0 for fl in FIELDS if not fl.read_only}
    f.update(example_vmcs_fields(eptp=rng.choice([None, 0x10_0000 | 0x1E, 0x20_0000 | 0x5E]),
                                 vpid=rng.choice([0, 1, 7])))
    if rng.random() < 0.25:
        f.update({"VM_ENTRY_CONTROLS": ENTRY_CTL_TRUE_DEFAULT1, "GUEST_IA32_EFER": 0,
                  "GUEST_CR0": VMX_CR0_FIXED0, "GUEST_CR4": VMX_CR4_FIXED0 | CR4_PAE,
                  "GUEST_CS_AR_BYTES": 0xB | AR_S | AR_P | AR_DB | AR_G,
                  "GUEST_CR3": rng.choice([0x8_0020, 0x8_0040])})
        for i in range(4):
            f[f"GUEST_PDPTR{i}"] = rng.choice([0, 0x9000 | 1, 1 << 45 | 1])
    if f["EPT_POINTER"] and rng.random() < 0.4:
        from rtl.arch.vmx import PROC2_ENABLE_VM_FUNCTIONS
        f["SECONDARY_VM_EXEC_CONTROL"] |= PROC2_ENABLE_VM_FUNCTIONS
        f["VM_FUNCTION_CONTROL"] = 1
        f["EPTP_LIST_ADDRESS"] = 0x6_0000
    if rng.random() < 0.2:
        f["VMCS_LINK_POINTER"] = rng.choice([vmcs_addr(7), BAD_REV_REGION, 0x123])
    for _ in range(rng.choice([0, 0, 0, 0, 0, 1, 2])):
        name = rng.choice(list(f))
        fld = FIELD_BY_NAME[name]
        f[name] = (f[name] ^ (1 << rng.randrange(fld.bits))) if rng.random() < 0.7 \
            else rng.getrandbits(fld.bits)
    return f


def random_guest(tb, rng: random.Random) -> dict:
    """The guest state at a VM exit: what the entry loaded, with a few of the fields a VM exit
    saves changed (the others cannot change in this core: `EXIT_SAVED_GUEST_FIELDS`)."""
    g = all_guest_state(tb)
    for _ in range(rng.choice([0, 1, 3, 10])):
        name = rng.choice(EXIT_SAVED_GUEST_FIELDS)
        g[name] = rng.getrandbits(FIELD_BY_NAME[name].bits)
    return g


async def random_sequence(tb: VmxTB, n: int, ops=RANDOM_OPS):
    rng = random.Random(tb.rng.getrandbits(64))
    choices = [op for op, _ in ops]
    weights = [w for _, w in ops]
    counts: dict = {}
    for addr in (0x8_0020, 0x8_0040):
        for i in range(4):
            tb.write(addr + 8 * i, rng.choice([0, 0x9_0000 | 1, 0x9_0000 | 1 | 1 << 7]))
    for addr in range(0x6_0000, 0x6_0020, 8):
        tb.write(addr, rng.choice([0x10_0000 | 0x1E, 0x20_0000 | 0x1F]))
    i = 0
    while i < n:
        m = tb.model
        if m.mode.name == "NON_ROOT" and rng.random() < 0.3:
            reason = rng.choice(EXIT_REASONS)
            await tb.vm_exit(reason, rng.getrandbits(64) if rng.random() < 0.5 else 0,
                             gla=rng.getrandbits(64), gpa=rng.getrandbits(MAXPHYADDR),
                             instr_len=rng.randrange(16), instr_info=rng.getrandbits(32),
                             guest=random_guest(tb, rng),
                             intr_info=rng.choice([0, rng.getrandbits(32)]),
                             intr_error=rng.getrandbits(32),
                             idt_vectoring_info=rng.choice([0, rng.getrandbits(32)]),
                             idt_vectoring_error=rng.getrandbits(32))
            counts[("exit",)] = counts.get(("exit",), 0) + 1
            i += 1
            continue
        prepared = False
        if m.mode.name == "ROOT" and m.current is not None and rng.random() < 0.07:
            # Make the current VMCS (nearly) enterable, through VMWRITEs of the fields that
            # differ, and enter.
            for name, value in random_example(rng).items():
                if m.current.fields[name] != value:
                    await tb.step(OP.VMWRITE, CpuState(), Operands(reg=enc(name), value=value),
                                  precheck=False)
                    i += 1
            launched = m.current.launched
            op = OP.VMRESUME if launched != (rng.random() < 0.15) else OP.VMLAUNCH
            prepared = True
        elif m.mode.name == "NON_ROOT" and rng.random() < 0.3:
            op = OP.VMFUNC
        else:
            op = rng.choices(choices, weights)[0]
        # Keep the unit in VMX operation most of the time.
        if m.mode.name == "OUTSIDE" and rng.random() < 0.7:
            op = OP.VMXON
        cpu = CpuState() if prepared and rng.random() < 0.8 else random_cpu(rng)
        o = random_operands(rng, op)
        exp, _, _ = await tb.step(op, cpu, o)
        key = (op.name, exp.kind.name, exp.error_number)
        counts[key] = counts.get(key, 0) + 1
        i += 1
    tb.check_memory("end of random sequence")
    return counts


@cocotb.test()
async def random_differential(dut):
    tb = await start(dut)
    n = env_int("VTX_VMX_OPS", 3000)
    counts = await random_sequence(tb, n)
    tb.log.info(f"{n} random ops; outcomes: "
                + ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=str)))


# =================================================================================================
# VM entry and VM exit
# =================================================================================================


async def write_fields(tb, fields: dict, cpu=None):
    """VMWRITE every field of `fields` (by name) into the current VMCS through the unit."""
    for name, value in fields.items():
        await expect(tb, OP.VMWRITE, cpu, Operands(reg=enc(name), value=value), kind=R.SUCCEED,
                     what=f"VMWRITE {name}")


async def setup_guest(tb, addr, fields=None, **kw):
    """VMCLEAR + VMPTRLD `addr` and VMWRITE a VMCS that passes every entry check."""
    await load(tb, addr)
    f = example_vmcs_fields(**kw)
    f.update(fields or {})
    await write_fields(tb, f)
    return f


def all_guest_state(tb):
    from rtl.arch.vmx import FieldType
    m = tb.model
    g = {f.name: m.current.fields[f.name] for f in FIELDS if f.type is FieldType.GUEST}
    g.update(m.guest.guest)
    return g


@cocotb.test()
async def round_trip(dut):
    """VMXON, VMCLEAR, VMPTRLD, VMWRITE of a full guest and host state, VMLAUNCH, an EPT
    violation exit, VMREAD of the exit fields, VMRESUME, VMRESUME after a control field's
    VMWRITE; cycle counts logged (and written to
    VTX_BENCH_OUT as JSON when that is set)."""
    tb = await start(dut, result_ready=1.0, mem_req_ready=1.0, mem_resp_valid=1.0,
                     latency=(2, 2), inval_ready=1.0)
    await vmxon(tb)
    await setup_guest(tb, vmcs_addr(0))
    _, _, launch_cycles = await expect(tb, OP.VMLAUNCH, kind=R.VM_ENTRY)
    guest = all_guest_state(tb)
    guest["GUEST_RIP"] += 7
    exp, exit_cycles = await tb.vm_exit(48, 0x181 | 0x7 << 3, gla=0x40_1234, gpa=0x9_9234,
                                        instr_len=0, guest=guest)
    exit_accept = tb.last_accept
    _, _, resume_cycles = await expect(tb, OP.VMRESUME, kind=R.VM_ENTRY)
    round_trip_cycles = tb.last_answer - exit_accept
    # Back in root via another exit, then the exit fields by VMREAD.
    await tb.vm_exit(48, 0x182, gla=0x40_2000, gpa=0x9_A000, guest=all_guest_state(tb))
    if await vmread(tb, "VM_EXIT_REASON") != 48:
        tb.fail("exit reason")
    if await vmread(tb, "EXIT_QUALIFICATION") != 0x182:
        tb.fail("exit qualification")
    if await vmread(tb, "GUEST_PHYSICAL_ADDRESS") != 0x9_A000:
        tb.fail("guest-physical address")
    if await vmread(tb, "GUEST_LINEAR_ADDRESS") != 0x40_2000:
        tb.fail("guest-linear address")
    if await vmread(tb, "GUEST_RIP") != example_vmcs_fields()["GUEST_RIP"] + 7:
        tb.fail("guest RIP not saved")
    await expect(tb, OP.VMLAUNCH, error=E.VMLAUNCH_NONCLEAR_VMCS)
    await expect(tb, OP.VMRESUME, kind=R.VM_ENTRY)
    # A VMX instruction in the guest: a VM exit decision, then the exit.
    await expect(tb, OP.VMREAD, o=Operands(reg=enc("GUEST_RIP"), qualification=0x10),
                 kind=R.VM_EXIT)
    await tb.vm_exit(23, 0x10, instr_len=3, instr_info=0x1234, guest=all_guest_state(tb))
    # VMRESUME after a VMWRITE of a control field (the entry silicon checks in full again).
    procbased = tb.model.current.fields["CPU_BASED_VM_EXEC_CONTROL"]
    await expect(tb, OP.VMWRITE, o=Operands(reg=enc("CPU_BASED_VM_EXEC_CONTROL"),
                                            value=procbased), kind=R.SUCCEED)
    _, _, resume_after_write_cycles = await expect(tb, OP.VMRESUME, kind=R.VM_ENTRY)
    await tb.vm_exit(48, 0x183, gla=0x40_3000, gpa=0x9_B000, guest=all_guest_state(tb))
    # VMREAD/VMWRITE/VMPTRLD hit and miss, VMCLEAR cycle counts.
    _, _, vmread_cycles = await expect(tb, OP.VMREAD, o=Operands(reg=enc("GUEST_RIP")),
                                       kind=R.SUCCEED)
    _, _, vmwrite_cycles = await expect(tb, OP.VMWRITE, o=Operands(reg=enc("GUEST_RSP"),
                                                                   value=0x1234), kind=R.SUCCEED)
    await expect(tb, OP.VMCLEAR, o=Operands(mem=vmcs_addr(1)), kind=R.SUCCEED)
    _, _, miss_cycles = await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(1)),
                                     kind=R.SUCCEED)
    _, _, hit_cycles = await expect(tb, OP.VMPTRLD, o=Operands(mem=vmcs_addr(0)), kind=R.SUCCEED)
    _, _, clear_cycles = await expect(tb, OP.VMCLEAR, o=Operands(mem=vmcs_addr(0)),
                                      kind=R.SUCCEED)
    bench = {"vmread_cycles": vmread_cycles, "vmwrite_cycles": vmwrite_cycles,
             "vmptrld_hit_cycles": hit_cycles, "vmptrld_miss_cycles": miss_cycles,
             "vmclear_cycles": clear_cycles, "vm_exit_cycles": exit_cycles,
             "vm_entry_cycles": resume_cycles, "vmlaunch_cycles": launch_cycles,
             "round_trip_cycles": round_trip_cycles,
             "vmresume_after_control_write_cycles": resume_after_write_cycles,
             "memory_latency_cycles": 2}
    tb.log.info(f"cycles: {bench}")
    out = os.environ.get("VTX_BENCH_OUT")
    if out:
        import json
        with open(out, "w") as fh:
            json.dump(bench, fh, indent=2, sort_keys=True)
    if round_trip_cycles > 50:
        tb.fail(f"round trip {round_trip_cycles} cycles > 50")


#: The fields a VM exit writes (what the unit copies into the VMCS's row after the exit).
EXIT_WRITTEN = ("VM_EXIT_REASON", "EXIT_QUALIFICATION", "GUEST_LINEAR_ADDRESS",
                "GUEST_PHYSICAL_ADDRESS", "VM_EXIT_INSTRUCTION_LEN", "VMX_INSTRUCTION_INFO",
                "VM_EXIT_INTR_INFO", "VM_EXIT_INTR_ERROR_CODE", "IDT_VECTORING_INFO_FIELD",
                "IDT_VECTORING_ERROR_CODE", "VM_ENTRY_INTR_INFO_FIELD", "VM_ENTRY_CONTROLS",
                *EXIT_SAVED_GUEST_FIELDS)


@cocotb.test()
async def vmread_during_write_back(dut):
    """VMREADs right after a VM exit, while the unit still copies the fields the exit wrote into
    the VMCS's memory row: every exit-written field (high halves too) read one after the other,
    guest state the exit changed first (copied late) and then, after another exit, in the
    order of the copy, each equal to the model's (the exit's values), and the exit information
    to the values the exit port carried. (A VMREAD that did not wait for its field's copy reads
    the entry's value: the first pass catches it.)"""
    tb = await start(dut, result_ready=1.0, mem_req_ready=1.0, mem_resp_valid=1.0,
                     latency=(2, 2), inval_ready=1.0)
    await vmxon(tb)
    await setup_guest(tb, vmcs_addr(0))
    await expect(tb, OP.VMLAUNCH, kind=R.VM_ENTRY)
    wide = {n for n in EXIT_WRITTEN if FIELD_BY_NAME[n].width is FieldWidth.BITS64}
    # First the fields every exit writes and this test changes, copied late (guest state after
    # the exit information), last copied first; then the others.
    changed = ["GUEST_CR3", "GUEST_CR0", "GUEST_RFLAGS", "GUEST_RSP", "GUEST_RIP"]
    late_first = changed + [n for n in reversed(EXIT_WRITTEN) if n not in changed]
    for k, (order, reason, qual) in enumerate(((late_first, 48, 0x183),
                                               (list(EXIT_WRITTEN), 28, 0x1F))):
        # Guest state that differs from what the row holds (the entry's values), so a VMREAD
        # of the row before the copy would read something else.
        guest = all_guest_state(tb)
        guest["GUEST_RIP"] += 3 + k
        guest["GUEST_RSP"] -= 0x40 * (k + 1)
        guest["GUEST_RFLAGS"] ^= 0x1
        guest["GUEST_CR3"] ^= 0x2000
        guest["GUEST_CR0"] ^= 0x8                   # TS
        guest["GUEST_DR7"] ^= 0x1
        guest["VMX_PREEMPTION_TIMER_VALUE"] = 0x1234 + k
        await tb.vm_exit(reason, qual, gla=0x40_3000, gpa=0x9_B000, instr_len=2, guest=guest)
        got = {}
        for name in order:
            got[name] = await vmread(tb, name)
            if name in wide:
                await vmread(tb, name, high=True)
        want = {"VM_EXIT_REASON": reason, "EXIT_QUALIFICATION": qual,
                "GUEST_PHYSICAL_ADDRESS": 0x9_B000, "GUEST_RIP": guest["GUEST_RIP"]}
        for name, value in want.items():
            if got[name] != value:
                tb.fail(f"{name} read {got[name]:#x} right after the exit, not {value:#x}")
        await expect(tb, OP.VMRESUME, kind=R.VM_ENTRY)


@cocotb.test()
async def entry_checks(dut):
    """Launch-state errors 4, 5, 6; control (7) and host (8) failures; VM-entry failures
    (guest state, VMCS link pointer, PDPTEs from memory and from the VMCS)."""
    tb = await start(dut)
    await vmxon(tb)
    a = vmcs_addr(0)
    await setup_guest(tb, a)
    await expect(tb, OP.VMRESUME, error=E.VMRESUME_NONLAUNCHED_VMCS)
    await expect(tb, OP.VMLAUNCH, kind=R.VM_ENTRY)
    await tb.vm_exit(12, guest=all_guest_state(tb))
    await expect(tb, OP.VMLAUNCH, error=E.VMLAUNCH_NONCLEAR_VMCS)
    # VMRESUME after VMXOFF: error 6 (also after the VMCS was evicted and reloaded).
    await expect(tb, OP.VMXOFF, kind=R.SUCCEED)
    await vmxon(tb)
    await expect(tb, OP.VMPTRLD, o=Operands(mem=a), kind=R.SUCCEED)
    await expect(tb, OP.VMRESUME, error=E.VMRESUME_AFTER_VMXOFF)
    for i in range(1, 6):
        await load(tb, vmcs_addr(i))
    await expect(tb, OP.VMPTRLD, o=Operands(mem=a), kind=R.SUCCEED)
    await expect(tb, OP.VMRESUME, error=E.VMRESUME_AFTER_VMXOFF)
    # Controls and host state.
    b = vmcs_addr(1)
    await setup_guest(tb, b)
    await write_fields(tb, {"VIRTUAL_PROCESSOR_ID": 0})
    await expect(tb, OP.VMLAUNCH, error=E.ENTRY_INVALID_CONTROL_FIELD)
    await write_fields(tb, {"VIRTUAL_PROCESSOR_ID": 3, "HOST_CR0": 0})
    await expect(tb, OP.VMLAUNCH, error=E.ENTRY_INVALID_HOST_STATE)
    # Guest state: VM-entry failure with host state loaded.
    await write_fields(tb, {"HOST_CR0": example_vmcs_fields()["HOST_CR0"], "GUEST_RFLAGS": 0})
    exp, _, _ = await expect(tb, OP.VMLAUNCH, kind=R.VM_EXIT)
    if exp.qualification != 0:
        tb.fail("guest-state failure qualification")
    await write_fields(tb, {"GUEST_RFLAGS": 2, "VMCS_LINK_POINTER": BAD_REV_REGION})
    exp, _, _ = await expect(tb, OP.VMLAUNCH, kind=R.VM_EXIT)
    if exp.qualification != 4:
        tb.fail("link-pointer failure qualification")
    await write_fields(tb, {"VMCS_LINK_POINTER": vmcs_addr(7)})
    await expect(tb, OP.VMLAUNCH, kind=R.VM_ENTRY)
    await tb.vm_exit(10, guest=all_guest_state(tb))
    # A PAE guest without EPT: PDPTEs from memory at CR3[31:5].
    from rtl.arch.vmx import AR_DB, AR_G, AR_P, AR_S, CR4_PAE, VMX_CR0_FIXED0, \
        VMX_CR4_FIXED0, ENTRY_CTL_TRUE_DEFAULT1
    c = vmcs_addr(2)
    pae = {"VM_ENTRY_CONTROLS": ENTRY_CTL_TRUE_DEFAULT1, "GUEST_IA32_EFER": 0,
           "GUEST_CR0": VMX_CR0_FIXED0, "GUEST_CR4": VMX_CR4_FIXED0 | CR4_PAE,
           "GUEST_CS_AR_BYTES": 0xB | AR_S | AR_P | AR_DB | AR_G, "GUEST_CR3": 0x8_0020}
    await setup_guest(tb, c, pae, eptp=None, vpid=0)
    for i in range(4):
        tb.write(0x8_0020 + 8 * i, 0x9_0000 * (i + 1) | 1)
    exp, _, _ = await expect(tb, OP.VMLAUNCH, kind=R.VM_ENTRY)
    await tb.vm_exit(1, guest=all_guest_state(tb))
    tb.write(0x8_0030, 0x9_0000 | 1 | 1 << 5)            # PDPTE2: reserved bit 5
    await load(tb, c)
    await write_fields(tb, example_vmcs_fields(eptp=None, vpid=0) | pae)
    exp, _, _ = await expect(tb, OP.VMLAUNCH, kind=R.VM_EXIT)
    if exp.qualification != 2:
        tb.fail("PDPTE failure qualification")
    # With EPT the PDPTEs come from the VMCS.
    await write_fields(tb, example_vmcs_fields(vpid=0) | pae
                       | {"GUEST_PDPTR1": 0x5000 | 1, "GUEST_PDPTR3": 1 << 60 | 1})
    exp, _, _ = await expect(tb, OP.VMLAUNCH, kind=R.VM_EXIT)
    if exp.qualification != 2:
        tb.fail("PDPTE (VMCS) failure qualification")
    await write_fields(tb, {"GUEST_PDPTR3": 0x7000 | 1})
    await expect(tb, OP.VMLAUNCH, kind=R.VM_ENTRY)
    await tb.vm_exit(0, guest=all_guest_state(tb), intr_info=0x80000B0E, intr_error=4)


@cocotb.test()
async def non_root(dut):
    """VMX instructions in VMX non-root operation exit; VMFUNC EPTP switching and its exits;
    entry with event injection, preemption timer and saved exit controls."""
    from rtl.arch.vmx import (EXIT_CTL_SAVE_DEBUG_CONTROLS, EXIT_CTL_SAVE_EFER, EXIT_CTL_SAVE_PAT,
                              EXIT_CTL_SAVE_PREEMPTION_TIMER, EXIT_CTL_LOAD_EFER, EXIT_CTL_LOAD_PAT,
                              ENTRY_CTL_LOAD_DEBUG_CONTROLS, ENTRY_CTL_LOAD_PAT, PIN_DEFAULT1,
                              PIN_PREEMPTION_TIMER, PROC2_ENABLE_EPT, PROC2_ENABLE_VM_FUNCTIONS,
                              PROC2_ENABLE_VPID)
    tb = await start(dut)
    await vmxon(tb)
    ex = example_vmcs_fields()
    fields = {
        "SECONDARY_VM_EXEC_CONTROL": PROC2_ENABLE_EPT | PROC2_ENABLE_VPID
        | PROC2_ENABLE_VM_FUNCTIONS,
        "VM_FUNCTION_CONTROL": 1, "EPTP_LIST_ADDRESS": 0x6_0000,
        "PIN_BASED_VM_EXEC_CONTROL": PIN_DEFAULT1 | PIN_PREEMPTION_TIMER,
        "VMX_PREEMPTION_TIMER_VALUE": 1000,
        "VM_EXIT_CONTROLS": ex["VM_EXIT_CONTROLS"] | EXIT_CTL_SAVE_DEBUG_CONTROLS
        | EXIT_CTL_SAVE_EFER | EXIT_CTL_SAVE_PAT | EXIT_CTL_SAVE_PREEMPTION_TIMER
        | EXIT_CTL_LOAD_EFER | EXIT_CTL_LOAD_PAT,
        "HOST_IA32_EFER": 0x500, "HOST_IA32_PAT": 0x0606060606060606,
        "VM_ENTRY_CONTROLS": ex["VM_ENTRY_CONTROLS"] | ENTRY_CTL_LOAD_DEBUG_CONTROLS
        | ENTRY_CTL_LOAD_PAT,
        "GUEST_DR7": 0xFFFF_FFFF,
        "VM_ENTRY_INTR_INFO_FIELD": 0x80000000 | 3 << 8 | 1 << 11 | 14,
        "VM_ENTRY_EXCEPTION_ERROR_CODE": 6,
    }
    await setup_guest(tb, vmcs_addr(0), fields)
    tb.write(0x6_0000, 0x10_0000 | 0x1E)
    tb.write(0x6_0008, 0x20_0000 | 0x1E)
    tb.write(0x6_0010, 0x20_0000 | 0x1F)            # bad memory type
    await expect(tb, OP.VMLAUNCH, kind=R.VM_ENTRY)
    for op in OP:
        if op is not OP.VMFUNC:
            await expect(tb, op, o=Operands(mem=vmcs_addr(1), reg=enc("GUEST_RIP"),
                                            qualification=0x55), kind=R.VM_EXIT)
    await expect(tb, OP.VMFUNC, o=Operands(reg=0, value=1), kind=R.COMPLETE)
    await expect(tb, OP.VMFUNC, o=Operands(reg=0, value=2), kind=R.VM_EXIT)
    await expect(tb, OP.VMFUNC, o=Operands(reg=0, value=512), kind=R.VM_EXIT)
    await expect(tb, OP.VMFUNC, o=Operands(reg=1, value=0), kind=R.VM_EXIT)
    await expect(tb, OP.VMFUNC, o=Operands(reg=64, value=0), kind=R.UD)
    await expect(tb, OP.VMFUNC, CpuState(cpl=3), Operands(reg=0, value=0), kind=R.COMPLETE)
    guest = all_guest_state(tb)
    guest.update(GUEST_DR7=0x1234, GUEST_IA32_PAT=0x0707070707070707, GUEST_IA32_EFER=0x100,
                 VMX_PREEMPTION_TIMER_VALUE=77, GUEST_CR0=guest["GUEST_CR0"] | 1 << 30)
    await tb.vm_exit(52, guest=guest)
    if await vmread(tb, "VMX_PREEMPTION_TIMER_VALUE") != 77:
        tb.fail("preemption timer not saved")
    await expect(tb, OP.VMRESUME, kind=R.VM_ENTRY)
    await tb.vm_exit(37, guest=all_guest_state(tb))
    # An entry without VPID asks the translation unit to flush VPID 0 (and its exit too).
    await write_fields(tb, {"SECONDARY_VM_EXEC_CONTROL": PROC2_ENABLE_EPT})
    await expect(tb, OP.VMRESUME, kind=R.VM_ENTRY)
    await tb.vm_exit(30, 0x1234 << 16, guest=all_guest_state(tb))


@cocotb.test()
async def msr_port(dut):
    """Every VMX capability MSR reads its value from rtl.arch.vmx VMX_MSRS; other numbers are
    not valid (RDMSR #GP), as the model's `rdmsr`."""
    tb = await start(dut)
    for addr in list(range(0x47E, 0x495)) + [0x3A, 0, 0xFFFF_FFFF]:
        dut.msr_addr.value = addr
        await RisingEdge(dut.clk)
        await ReadOnly()
        want = tb.model.rdmsr(addr)
        valid, value = int(dut.msr_valid.value), int(dut.msr_value.value)
        if (want is None) != (not valid) or (want is not None and value != want):
            tb.fail(f"MSR {addr:#x}: valid={valid} value={value:#x}, model {want}")
        await RisingEdge(dut.clk)
