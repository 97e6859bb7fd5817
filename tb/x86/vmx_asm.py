"""Assembly generators for programs that run a guest on the system (tests and benchmarks).

`hypervisor(guest, handler, ...)` returns the source of a complete program (GNU as, Intel syntax)
that enters VMX operation, loads a VMCS with every field of `tb.model.vmx.example_vmcs_fields`
(the VMCS every entry check accepts) adjusted to this system's memory map, and VMLAUNCHes the
`guest` lines, with `handler` as the host RIP. The field encodings come from `rtl.arch.vmx`, so
no constant is copied into assembly by hand. A failed VMX instruction ends the run with exit
code 99 (after printing "VMfail" and the VM-instruction error + 0x40 as a character).
"""

from __future__ import annotations

from rtl.arch.vmx import FIELD_BY_NAME, VMCS_REVISION_ID

__all__ = ["hypervisor", "VMXON_REGION", "VMCS_REGION", "POINTERS", "EPT_PML4", "EPT_PDPT",
           "HOST_STACK", "GUEST_STACK", "EPT_1G_WB_RWX", "EPTP"]

VMXON_REGION, VMCS_REGION, POINTERS = 0x180000, 0x181000, 0x182000
EPT_PML4, EPT_PDPT = 0x190000, 0x191000
HOST_STACK, GUEST_STACK = 0xF0000, 0xE0000
#: An EPT PDPTE mapping a 1 GiB page: read, write, execute, memory type WB (6), PS.
EPT_1G_WB_RWX = 0x80 | (6 << 3) | 0x7
#: EPTP: WB, 4-level walk, the PML4 above.
EPTP = EPT_PML4 | (3 << 3) | 6


def hypervisor(guest: list[str], handler: list[str], *, ept: bool = True, vpid: int = 1,
               fields: dict[str, int | str] | None = None, prologue: list[str] = ()) -> str:
    """The program's source. `fields` overrides VMCS fields (by name; a string is a label whose
    address is written). GPA = HPA for the first GiB when `ept`. `prologue` runs first."""
    from tb.model.vmx import example_vmcs_fields

    f: dict[str, int | str] = dict(example_vmcs_fields(eptp=EPTP if ept else None, vpid=vpid))
    f.update(HOST_CR3=0x1000, GUEST_CR3=0x1000, HOST_GDTR_BASE=0x3000, HOST_IDTR_BASE=0x3000,
             HOST_TR_BASE=0x3000, HOST_RSP=HOST_STACK, GUEST_RSP=GUEST_STACK,
             HOST_RIP="handler", GUEST_RIP="guest")
    f.update(fields or {})
    lines = [".intel_syntax noprefix", ".globl _start", "_start:", *prologue,
             "  mov rax, cr4", "  or rax, 0x2000", "  mov cr4, rax",
             f"  mov dword ptr [{VMXON_REGION:#x}], {VMCS_REVISION_ID:#x}",
             f"  mov dword ptr [{VMCS_REGION:#x}], {VMCS_REVISION_ID:#x}",
             f"  mov qword ptr [{POINTERS:#x}], {VMXON_REGION:#x}",
             f"  mov qword ptr [{POINTERS + 8:#x}], {VMCS_REGION:#x}",
             f"  mov qword ptr [{EPT_PML4:#x}], {EPT_PDPT | 7:#x}",
             f"  mov qword ptr [{EPT_PDPT:#x}], {EPT_1G_WB_RWX:#x}",
             f"  vmxon [{POINTERS:#x}]", "  jbe vmfail",
             f"  vmclear [{POINTERS + 8:#x}]", "  jbe vmfail",
             f"  vmptrld [{POINTERS + 8:#x}]", "  jbe vmfail"]
    for name, value in f.items():
        enc = FIELD_BY_NAME[name].encoding
        src = (f"  lea rax, [rip + {value}]" if isinstance(value, str)
               else f"  mov rax, {value:#x}")
        lines += [f"  mov rdx, {enc:#x}", src, "  vmwrite rdx, rax", "  jbe vmfail"]
    lines += ["  vmlaunch",
              "vmfail:",
              "  mov al, 'V'", "  out 0xe9, al", "  mov rdx, 0x4400", "  vmread rax, rdx",
              "  add al, 0x40", "  out 0xe9, al", "  mov eax, 99", "  out 0xf4, eax",
              "handler:", *handler,
              "guest:", *guest, ""]
    return "\n".join(lines)
