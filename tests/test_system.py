"""The system unit's rules, directed, on the whole system (`rtl.soc.Soc` under Verilator).

Each program is generated here from the constants modules (rtl.arch.system, rtl.arch.vmx), run
with ``vtx run --json``, and the results it stored in a table (dumped with ``--dump``) or the way
it ended are compared with values written down from the SDM and docs/system.md:

* root operation: CPUID leaves, RDMSR of every capability MSR, IA32_FEATURE_CONTROL and EFER,
  RDTSC, MOV from/to CR0/CR3/CR4, IN (open bus, partial register writes), WRMSR EFER.NXE,
  INVLPG, the console; and one program per fault (root operation has no IDT: the run stops);
  self-modifying code written through an alias (another linear address of the same page);
* non-root operation: one exit of each kind the system decides (exception bitmap, triple fault,
  CR3-load exiting, RDMSR without MSR bitmaps, HLT exiting, unconditional I/O exiting, EPT
  violation, EPT misconfiguration, MTF, VMCALL) with reason, qualification, interruption
  information, instruction length, guest RIP and guest-physical address as stored in the VMCS;
  the VM-exit instruction information and qualification of every operand form of the VMX
  instructions (SDM 28.2.5, tables 28-13 to 28-15), and 0 for the other exits.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtl.arch.system import (BOOT_PDPT, CPUID_LEAVES, CPUID_MAX_LEAF, FEATURE_CONTROL_RESET,
                             IO_OPEN_BUS, MSR_EFER)
from rtl.arch.vmx import (IA32_FEATURE_CONTROL, PROC_CR3_LOAD_EXITING, PROC_HLT_EXITING,
                          PROC_MONITOR_TRAP_FLAG, PROC_TRUE_DEFAULT1,
                          PROC_UNCONDITIONAL_IO_EXITING, PROC_ACTIVATE_SECONDARY, VMX_MSRS,
                          FIELD_BY_NAME, ExitReason, VmxInstrInfoLayout)
from rtl.core.core import RESET_CR0, RESET_CR4, RESET_EFER
from tb.x86.vmx_asm import EPT_PDPT, hypervisor

TABLE = 0x200000


def vtx_run(tmp_path, name: str, source: str, *, dump: int = 0, max_cycles: int = 400_000):
    path = tmp_path / f"{name}.S"
    path.write_text(source)
    cmd = [sys.executable, "-m", "sim.cli", "run", "--json", "--max-cycles", str(max_cycles)]
    if dump:
        cmd += ["--dump", f"{TABLE:#x}:{8 * dump}"]
    proc = subprocess.run(cmd + [str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    if dump:
        raw = bytes.fromhex(result["memory"][0]["hex"])
        result["table"] = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
    return result


def program(lines: list[str]) -> str:
    return "\n".join([".intel_syntax noprefix", ".globl _start", "_start:",
                      f"  mov rdi, {TABLE:#x}", *lines, ""])


def store(*regs: str) -> list[str]:
    out = []
    for r in regs:
        out += [f"  mov [rdi], {r}", "  add rdi, 8"]
    return out


# --- root operation -----------------------------------------------------------------------------

def test_root_system_instructions(tmp_path):
    msrs = sorted(VMX_MSRS)
    lines: list[str] = []
    expect: list[int] = []
    for leaf in (0, 1, 0x40000000, 0x80000000, 0x80000008):
        lines += [f"  mov eax, {leaf:#x}", "  mov ecx, 0", "  cpuid", *store("rax", "rbx", "rcx", "rdx")]
        expect += list(CPUID_LEAVES.get(leaf, CPUID_LEAVES[CPUID_MAX_LEAF]))
    for msr in (IA32_FEATURE_CONTROL, MSR_EFER, *msrs):
        lines += [f"  mov ecx, {msr:#x}", "  rdmsr", *store("rax", "rdx")]
        value = {IA32_FEATURE_CONTROL: FEATURE_CONTROL_RESET, MSR_EFER: RESET_EFER}.get(
            msr, VMX_MSRS.get(msr))
        expect += [value & 0xFFFFFFFF, value >> 32]
    lines += ["  mov rax, cr0", *store("rax"), "  mov rax, cr3", *store("rax"),
              "  mov rax, cr4", *store("rax")]
    expect += [RESET_CR0, 0x1000, RESET_CR4]
    # CR4.VMXE can be set and reads back.
    lines += ["  mov rax, cr4", "  or rax, 0x2000", "  mov cr4, rax", "  mov rbx, cr4",
              *store("rbx")]
    expect += [RESET_CR4 | 0x2000]
    # IN: open bus; 8/16-bit destinations keep the rest of RAX, 32-bit zero-extends.
    lines += ["  mov rax, 0x1122334455667788", "  in al, 0x80", *store("rax"),
              "  mov rax, 0x1122334455667788", "  mov edx, 0x1234", "  in ax, dx", *store("rax"),
              "  mov rax, 0x1122334455667788", "  in eax, 0x80", *store("rax")]
    expect += [0x11223344556677FF, 0x112233445566FFFF, IO_OPEN_BUS]
    # WRMSR EFER: NXE is writable, LME/LMA stay.
    lines += [f"  mov ecx, {MSR_EFER:#x}", "  rdmsr", "  or eax, 0x800", "  wrmsr", "  rdmsr",
              *store("rax")]
    expect += [RESET_EFER | 0x800]
    # MOV to CR3 (same value: flushes), INVLPG: the program goes on with the same mappings.
    lines += ["  mov rax, cr3", "  mov cr3, rax", "  invlpg [rdi]", "  mov rax, [rdi - 8]",
              *store("rax")]
    expect += [RESET_EFER | 0x800]
    # RDTSC counts up.
    lines += ["  rdtsc", "  shl rdx, 32", "  or rax, rdx", "  mov rbx, rax", "  nop", "  rdtsc",
              "  shl rdx, 32", "  or rax, rdx", "  sub rax, rbx", *store("rax")]
    lines += ["  mov al, 'o'", "  out 0xe9, al", "  mov al, 'k'", "  mov dx, 0xe9",
              "  out dx, al", "  mov eax, 0x1234", "  out 0xf4, eax"]
    r = vtx_run(tmp_path, "root", program(lines), dump=len(expect) + 1)
    assert r["exit"] == {"kind": "exit_port", "code": 0x1234}
    assert r["console"] == "ok"
    assert r["vmx"]["mode"] == "off"
    got = r["table"]
    for i, want in enumerate(expect):
        assert got[i] == want, f"table[{i}] = {got[i]:#x}, expected {want:#x}"
    assert 0 < got[len(expect)] < 1000, "RDTSC did not count the cycles of five instructions"


def test_cpuid_extended_leaves(tmp_path):
    """CPUID 0x80000000 / 0x80000008 as the SDM defines them (Vol. 2A, CPUID): the highest
    extended leaf covers 0x80000008, whose EAX gives the physical-address width (MAXPHYADDR =
    40, what the translation checks) in bits 7:0 and the linear width (48, 4-level paging) in
    15:8; 0x80000001 reports Intel 64; the brand string is ASCII; a leaf above the extended
    maximum answers as the highest basic leaf (leaf 0's EAX), as on Intel parts."""
    leaves = (0, 0x80000000, 0x80000001, 0x80000002, 0x80000003, 0x80000004, 0x80000008,
              0x80000009)
    lines: list[str] = []
    for leaf in leaves:
        lines += [f"  mov eax, {leaf:#x}", "  mov ecx, 0", "  cpuid",
                  *store("rax", "rbx", "rcx", "rdx")]
    lines += ["  mov eax, 1", "  cpuid", *store("rax", "rbx", "rcx", "rdx")]
    lines += ["  mov eax, 0", "  out 0xf4, eax"]
    r = vtx_run(tmp_path, "cpuid", program(lines), dump=4 * (len(leaves) + 1))
    assert r["exit"] == {"kind": "exit_port", "code": 0}
    t = r["table"]
    answer = {leaf: t[4 * i:4 * i + 4] for i, leaf in enumerate(leaves)}
    leaf1 = t[4 * len(leaves):]
    assert answer[0x80000000][0] == 0x80000008
    eax = answer[0x80000008][0]
    assert eax & 0xFF == 40 and (eax >> 8) & 0xFF == 48 and eax >> 16 == 0
    assert answer[0x80000001][3] >> 29 & 1          # Intel 64 architecture
    brand = b"".join(v.to_bytes(4, "little") for leaf in (0x80000002, 0x80000003, 0x80000004)
                     for v in answer[leaf])
    assert brand.rstrip(b"\0").decode("ascii").isprintable() and brand[:3] == b"VTX"
    assert answer[0][0] == 1 and answer[0x80000009] == leaf1


FAULTS = {
    # name: (lines, vector, error code or None)
    "rdmsr_unknown": (["  mov ecx, 0x1b", "  rdmsr"], 13, 0),
    "wrmsr_feature_control": (["  mov ecx, 0x3a", "  xor eax, eax", "  xor edx, edx",
                               "  wrmsr"], 13, 0),
    "cr0_clear_pg": (["  mov rax, cr0", "  mov rbx, 0x7fffffff", "  and rax, rbx",
                      "  mov cr0, rax"], 13, 0),
    "cr4_clear_pae": (["  mov rax, cr4", "  and rax, ~0x20", "  mov cr4, rax"], 13, 0),
    # NW = 1 with CD = 0: an invalid combination (SDM MOV to CR0).
    "cr0_nw_without_cd": (["  mov rax, cr0", "  mov rbx, 0xbfffffff", "  and rax, rbx",
                           "  or rax, 0x20000000", "  mov cr0, rax"], 13, 0),
    "vmxon_without_vmxe": (["  vmxon [rdi]"], 6, None),
    "page_fault_read": (["  mov rax, 0x8000000000", "  mov rbx, [rax]"], 14, 0),
    "ud2": (["  ud2"], 6, None),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_root_fault_stops(tmp_path, name):
    lines, vector, error = FAULTS[name]
    src = program([*lines, "  mov eax, 1", "  out 0xf4, eax"])
    r = vtx_run(tmp_path, name, src)
    assert r["exit"]["kind"] == "fault", r["exit"]
    assert r["exit"]["vector"] == vector
    assert r["exit"]["error_code"] == error
    assert r["exit"]["rip"] == r["regs"]["rip"], "the faulting instruction did not retire"


def test_cr0_cd_and_nw_together_are_accepted(tmp_path):
    """The valid counterpart of `cr0_nw_without_cd`: CD = 1 with NW = 1, then both cleared."""
    r = vtx_run(tmp_path, "cr0_cd_nw", program([
        "  mov rax, cr0", "  mov rbx, rax", "  or rax, 0x60000000", "  mov cr0, rax",
        "  mov rcx, cr0", "  mov cr0, rbx", "  mov rdx, cr0", "  mov eax, 0", "  out 0xf4, eax"]))
    assert r["exit"] == {"kind": "exit_port", "code": 0}
    assert r["regs"]["rcx"] == r["regs"]["rbx"] | 0x6000_0000
    assert r["regs"]["rdx"] == r["regs"]["rbx"]


def test_root_hlt_stops(tmp_path):
    r = vtx_run(tmp_path, "hlt", program(["  mov rbx, 5", "  hlt", "  mov rbx, 6"]))
    assert r["exit"] == {"kind": "hlt"}
    assert r["regs"]["rbx"] == 5


def test_self_modifying_code_through_an_alias(tmp_path):
    """A store that changes code through another linear address (the same physical page) is
    seen by the next fetch: the code just behind the store, and a loop body fetched before
    (followed by the jump back). The patched immediates must be what runs."""
    alias = 4 << 30                 # PDPTE 4 maps linear 4 GiB .. 5 GiB onto physical 0
    lines = [f"  mov rax, {0x83:#x}", f"  mov [{BOOT_PDPT + 8 * 4:#x}], rax",
             f"  mov rsi, {alias:#x}",
             "  lea rbx, [rip + patched]", "  add rbx, rsi",
             "  mov dword ptr [rbx + 1], 0x22222222",
             "patched:", "  mov eax, 0x11111111", *store("rax"),
             "  xor ecx, ecx", "  lea rbx, [rip + body]", "  add rbx, rsi",
             "body:", "  mov eax, 0x33333333", "  add ecx, eax", "  cmp eax, 0x33333333",
             "  jne done", "  mov dword ptr [rbx + 1], 0x44444444", "  jmp body",
             "done:", *store("rax", "rcx"), "  mov eax, 0", "  out 0xf4, eax"]
    r = vtx_run(tmp_path, "smc_alias", program(lines), dump=3)
    assert r["exit"] == {"kind": "exit_port", "code": 0}
    assert r["table"] == [0x22222222, 0x44444444, 0x77777777]


# --- non-root operation: one exit of each kind --------------------------------------------------

EXIT_RECORD = 6     # qwords the handler stores per exit
# The handler stores reason, qualification, interruption info, instruction length, guest RIP,
# guest-physical address; then resumes the guest at R14 (the guest sets it before each step),
# except: after an exception exit it clears the exception bitmap (the next #UD triple-faults),
# an EPT violation maps the page instead (and resumes at the same RIP), MTF is switched off after
# its exit, and VMCALL ends the run.
_HANDLER = [
    "  mov rdx, 0x4402", "  vmread rax, rdx", "  mov [rdi], rax",
    "  mov rdx, 0x6400", "  vmread rbx, rdx", "  mov [rdi + 8], rbx",
    "  mov rdx, 0x4404", "  vmread rbx, rdx", "  mov [rdi + 16], rbx",
    "  mov rdx, 0x440c", "  vmread rbx, rdx", "  mov [rdi + 24], rbx",
    "  mov rdx, 0x681e", "  vmread rbx, rdx", "  mov [rdi + 32], rbx",
    "  mov rdx, 0x2400", "  vmread rbx, rdx", "  mov [rdi + 40], rbx",
    f"  add rdi, {8 * EXIT_RECORD}",
    "  cmp eax, 18", "  je h_done",
    "  cmp eax, 0", "  jne 1f",
    "  mov rdx, 0x4004", "  xor ebx, ebx", "  vmwrite rdx, rbx", "  jmp h_resume",
    "1: cmp eax, 48", "  jne 2f",
    f"  mov qword ptr [{EPT_PDPT + 8:#x}], 0xB7", "  vmresume",
    "2: cmp eax, 37", "  jne h_resume",
    "  mov rdx, 0x4002", "  vmread rbx, rdx", f"  and ebx, {~PROC_MONITOR_TRAP_FLAG & 0xFFFFFFFF:#x}",
    "  vmwrite rdx, rbx",
    "h_resume:", "  mov rdx, 0x681e", "  vmwrite rdx, r14", "  vmresume",
    "  jmp vmfail",
    "h_done:", "  vmxoff", "  xor eax, eax", "  out 0xf4, eax",
]

_GUEST = [
    "  lea r14, [rip + g1]", "g0: ud2",                                  # exception bitmap
    "g1: lea r14, [rip + g2]", "  ud2",                                  # triple fault
    "g2: lea r14, [rip + g3]", "  mov rax, cr3", "g2x: mov cr3, rax",    # CR3-load exiting
    "g3: lea r14, [rip + g4]", "  mov ecx, 0x3a", "g3x: rdmsr",          # no MSR bitmaps
    "g4: lea r14, [rip + g5]", "g4x: hlt",                               # HLT exiting
    "g5: lea r14, [rip + g6]", "g5x: out 0x80, al",                      # unconditional I/O
    "g6: lea r14, [rip + g7]", "  mov rbx, 0x40000010", "g6x: mov rax, [rbx]",  # EPT violation
    "g7: lea r14, [rip + g8]", "  mov rbx, 0x80000008", "g7x: mov rax, [rbx]",  # misconfig
    "g8: lea r14, [rip + g9]", "  vmcall",
    "g9: nop",
]


def test_non_root_exits(tmp_path):
    proc = (PROC_TRUE_DEFAULT1 | PROC_ACTIVATE_SECONDARY | PROC_CR3_LOAD_EXITING
            | PROC_HLT_EXITING | PROC_UNCONDITIONAL_IO_EXITING)
    # EPT: PDPTE 1 (GPA 1-2 GiB) not present; PDPTE 2 write-only (a misconfiguration).
    prologue = [f"  mov rdi, {TABLE:#x}", f"  mov qword ptr [{EPT_PDPT + 16:#x}], 0x82"]
    src = hypervisor(_GUEST, _HANDLER, prologue=prologue,
                     fields={"CPU_BASED_VM_EXEC_CONTROL": proc, "EXCEPTION_BITMAP": 1 << 6})
    n = 9
    r = vtx_run(tmp_path, "exits", src, dump=n * EXIT_RECORD)
    assert r["exit"] == {"kind": "exit_port", "code": 0}, (r["exit"], r["console"])
    t = r["table"]
    recs = [t[i * EXIT_RECORD:(i + 1) * EXIT_RECORD] for i in range(n)]
    reasons = [rec[0] for rec in recs]
    assert reasons == [e.value for e in (
        ExitReason.EXCEPTION_NMI, ExitReason.TRIPLE_FAULT, ExitReason.CR_ACCESS, ExitReason.RDMSR,
        ExitReason.HLT, ExitReason.IO_INSTRUCTION, ExitReason.EPT_VIOLATION,
        ExitReason.EPT_MISCONFIG, ExitReason.VMCALL)]
    exc, triple, cr, rdmsr, hlt, io, eptv, eptm, vmcall = recs
    assert exc[2] == 0x80000306, f"#UD interruption information {exc[2]:#x}"
    assert triple[2] == 0
    assert cr[1] == 0x3, "MOV to CR3 from RAX: CR 3, access type 0, GPR 0"
    assert cr[3] == 3, "MOV CR3, RAX is 3 bytes"
    assert rdmsr[3] == 2 and hlt[3] == 1 and io[3] == 2
    assert io[1] == (0x80 << 16) | (1 << 6) | 0, "OUT imm8, AL: port 80h, immediate, 1 byte"
    assert eptv[1] & 0x7 == 0x1 and eptv[1] & 0x180 == 0x180, f"EPT violation qual {eptv[1]:#x}"
    assert eptv[5] == 0x40000010, "the GPA of the access"
    assert eptm[5] == 0x80000008
    assert vmcall[3] == 3
    assert r["vm_exits"] == {"EXCEPTION_NMI": 1, "TRIPLE_FAULT": 1, "CR_ACCESS": 1, "RDMSR": 1,
                             "HLT": 1, "IO_INSTRUCTION": 1, "EPT_VIOLATION": 1,
                             "EPT_MISCONFIG": 1, "VMCALL": 1}


def test_monitor_trap_flag(tmp_path):
    # With MTF on, the guest exits after its first instruction (reason 37, RIP after it); the
    # handler turns MTF off and the guest runs on to its VMCALL.
    guest = ["  lea r14, [rip + m1]", "  nop", "m1: vmcall"]
    proc = PROC_TRUE_DEFAULT1 | PROC_ACTIVATE_SECONDARY | PROC_MONITOR_TRAP_FLAG
    src = hypervisor(guest, _HANDLER, prologue=[f"  mov rdi, {TABLE:#x}"],
                     fields={"CPU_BASED_VM_EXEC_CONTROL": proc})
    r = vtx_run(tmp_path, "mtf", src, dump=2 * EXIT_RECORD)
    assert r["exit"] == {"kind": "exit_port", "code": 0}, (r["exit"], r["console"])
    t = r["table"]
    assert [t[0], t[EXIT_RECORD]] == [ExitReason.MONITOR_TRAP_FLAG.value, ExitReason.VMCALL.value]
    # The MTF exit came right after the first guest instruction (the LEA): its guest RIP is the
    # NOP's; the handler resumed at R14 = the VMCALL, one byte further.
    assert t[EXIT_RECORD + 4] - t[4] == 1
    assert t[3] == 0, "an MTF exit has no instruction length"


# --- non-root operation: VM-exit instruction information of the VMX instructions ----------------

_U64 = (1 << 64) - 1
DS, SS, FS, GS = 3, 2, 4, 5         # the field's segment-register encoding (SDM table 28-14)
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
R8, R9, R10, R11, R12, R13, R14, R15 = range(8, 16)


def reg_info(reg1: int, reg2: int) -> int:
    """VMREAD/VMWRITE with a register operand (table 28-15): bit 10 set, Reg1 = the r/m register,
    Reg2 = ModRM.reg; scaling, address size, segment, index and base are undefined (0)."""
    return VmxInstrInfoLayout.const({"register_operand": 1, "reg1": reg1,
                                     "reg2": reg2}).as_bits()


def mem_info(seg: int, base: int | None = None, index: int | None = None, scale: int = 0,
             reg2: int = 0) -> int:
    """A memory operand (tables 28-13..28-15): address size 2 (64-bit), bit 10 clear; a missing
    base or index is reported invalid (its number and, without an index, the scaling are
    undefined: 0)."""
    return VmxInstrInfoLayout.const({
        "scaling": scale, "address_size": 2, "segment": seg,
        "index": index or 0, "index_invalid": index is None,
        "base": base or 0, "base_invalid": base is None, "reg2": reg2}).as_bits()


# (instruction, exit reason, instruction information, exit qualification, length); the
# qualification None means RIP-relative: next RIP + displacement. Lengths are those of the
# encodings GNU as emits (prefixes, REX, 0F [38] opcode, ModRM, SIB, displacement).
_R = ExitReason
INFO_CASES = [
    ("vmread rbx, rcx", _R.VMREAD, reg_info(RBX, RCX), 0, 3),
    ("vmread r9, r12", _R.VMREAD, reg_info(R9, R12), 0, 4),
    ("vmwrite rdx, rbx", _R.VMWRITE, reg_info(RBX, RDX), 0, 3),
    ("vmread [rax + rcx*4 + 0x10], rdx", _R.VMREAD, mem_info(DS, RAX, RCX, 2, RDX), 0x10, 5),
    ("vmwrite r11, [r13 + r10*8 - 8]", _R.VMWRITE, mem_info(DS, R13, R10, 3, R11), _U64 - 7, 6),
    ("vmread [r13], r14", _R.VMREAD, mem_info(DS, R13, reg2=R14), 0, 5),
    ("vmwrite r15, [rsp + rax*2 + 0x12345678]", _R.VMWRITE, mem_info(SS, RSP, RAX, 1, R15),
     0x12345678, 9),
    ("vmptrld [rbx]", _R.VMPTRLD, mem_info(DS, RBX), 0, 3),
    ("vmptrld [r12]", _R.VMPTRLD, mem_info(DS, R12), 0, 5),
    ("vmclear [rsp + 8]", _R.VMCLEAR, mem_info(SS, RSP), 8, 6),
    ("vmptrst [rbp - 0x20]", _R.VMPTRST, mem_info(SS, RBP), _U64 - 0x1F, 4),
    ("vmxon [rip + 0x1234]", _R.VMXON, mem_info(DS), None, 8),
    ("vmclear [r12*2 + 0x100]", _R.VMCLEAR, mem_info(DS, index=R12, scale=1), 0x100, 10),
    # Segment overrides: FS and GS are reported; 64-bit mode ignores DS (SS for RBP stays).
    ("vmptrld fs:[rax]", _R.VMPTRLD, mem_info(FS, RAX), 0, 4),
    ("vmptrst gs:[rsp]", _R.VMPTRST, mem_info(GS, RSP), 0, 5),
    ("vmptrld ds:[rbp + 8]", _R.VMPTRLD, mem_info(SS, RBP), 8, 5),
    ("invept r8, [rsi + rdi*1 + 0x7f]", _R.INVEPT, mem_info(DS, RSI, RDI, 0, R8), 0x7F, 8),
    ("invvpid rdx, [rbp + r15*8]", _R.INVVPID, mem_info(SS, RBP, R15, 3, RDX), 0, 8),
    # Exits without instruction information (undefined: 0), also right after one with it.
    ("cpuid", _R.CPUID, 0, 0, 2),
    ("vmlaunch", _R.VMLAUNCH, 0, 0, 3),
    ("vmptrst [rax]", _R.VMPTRST, mem_info(DS, RAX), 0, 3),
    ("vmresume", _R.VMRESUME, 0, 0, 3),
    ("vmxoff", _R.VMXOFF, 0, 0, 3),
    ("vmcall", _R.VMCALL, 0, 0, 3),
]

_INFO_FIELDS = ("VM_EXIT_REASON", "EXIT_QUALIFICATION", "VMX_INSTRUCTION_INFO",
                "VM_EXIT_INSTRUCTION_LEN", "GUEST_RIP")
INFO_RECORD = len(_INFO_FIELDS)
_INFO_HANDLER = [
    *[line for i, name in enumerate(_INFO_FIELDS)
      for line in (f"  mov rdx, {FIELD_BY_NAME[name].encoding:#x}", "  vmread rbx, rdx",
                   f"  mov [rdi + {8 * i}], rbx")],
    f"  add rdi, {8 * INFO_RECORD}",
    f"  mov rdx, {FIELD_BY_NAME['VM_EXIT_REASON'].encoding:#x}", "  vmread rax, rdx",
    f"  cmp eax, {ExitReason.VMCALL.value}", "  je 1f",
    f"  mov rdx, {FIELD_BY_NAME['GUEST_RIP'].encoding:#x}", "  vmwrite rdx, r14", "  vmresume",
    "  jmp vmfail",
    "1: vmxoff", "  xor eax, eax", "  out 0xf4, eax",
]


def test_vmx_instruction_information(tmp_path):
    # Each guest instruction exits (non-root VMX instructions exit unconditionally); the handler
    # stores the exit's record and resumes the guest at R14, the next instruction.
    guest = []
    for i, (insn, *_) in enumerate(INFO_CASES):
        guest += [f"i{i}: lea r14, [rip + i{i + 1}]", f"  {insn}"]
    guest += [f"i{len(INFO_CASES)}: jmp vmfail"]
    src = hypervisor(guest, _INFO_HANDLER, prologue=[f"  mov rdi, {TABLE:#x}"])
    n = len(INFO_CASES)
    r = vtx_run(tmp_path, "instr_info", src, dump=n * INFO_RECORD)
    assert r["exit"] == {"kind": "exit_port", "code": 0}, (r["exit"], r["console"])
    t = r["table"]
    # Two values worked out bit by bit from table 28-15, to pin the layout's bit positions.
    assert reg_info(RBX, RCX) == (1 << 28) | (1 << 10) | (3 << 3)
    assert mem_info(DS, R13, R10, 3, R11) == \
        (11 << 28) | (13 << 23) | (10 << 18) | (3 << 15) | (2 << 7) | 3
    for i, (insn, reason, info, qual, length) in enumerate(INFO_CASES):
        got_reason, got_qual, got_info, got_len, rip = t[i * INFO_RECORD:(i + 1) * INFO_RECORD]
        if qual is None:
            qual = rip + length + 0x1234
        assert (got_reason, got_len) == (reason.value, length), insn
        assert got_info == info, f"{insn}: instruction information {got_info:#x}, " \
                                 f"expected {info:#x}"
        assert got_qual == qual, f"{insn}: qualification {got_qual:#x}, expected {qual:#x}"
