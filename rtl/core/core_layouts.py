"""The execution engine's interfaces (`rtl.core.core.Core`; docs/core.md "The execution engine").

* `MEM_REQ_LAYOUT` / `MEM_RESP_LAYOUT`: the memory port, one qword-aligned access per request,
  kind `rtl.arch.paging.Access` (FETCH/READ/WRITE), and a response carrying the data or a fault
  (`rtl.arch.paging.Outcome` + error code), so a translation unit can sit between core and RAM;
  `FSM_REQ_LAYOUT`: the same request without `prefetch`, from the FSM to the prefetcher;
* `CoreState`: the FSM states (an enum, so a waveform says where the core is);
* `StopKind`, `NeedsUnit`, `EXCEPTION_LAYOUT`: why the core stopped;
* `SysKind`, `SysAction`, `SYS_REQ_LAYOUT`, `SYS_RESP_LAYOUT`: the system port, over which the
  core hands an instruction it does not execute itself (CPUID, RDTSC, RDMSR/WRMSR, MOV CR,
  INVLPG, IN/OUT, HLT, the VMX instructions), every fault and every instruction-boundary event
  to the system (`rtl.soc.system_unit`), which answers with what to do (docs/system.md).
"""

from amaranth.lib import data, enum

from ..arch.paging import Access, Outcome

__all__ = ["FSM_REQ_LAYOUT", "MEM_REQ_LAYOUT", "MEM_RESP_LAYOUT", "CoreState", "StopKind",
           "NeedsUnit", "EXCEPTION_LAYOUT", "SysKind", "SysAction", "SYS_REQ_LAYOUT",
           "SYS_RESP_LAYOUT", "VECTOR_UD", "VECTOR_SS", "VECTOR_GP", "VECTOR_PF"]

VECTOR_UD = 6
VECTOR_SS = 12
VECTOR_GP = 13
VECTOR_PF = 14

_ACCESS_FIELDS = {
    "addr": 64,         # linear address, qword aligned (bits 2:0 are 0)
    "kind": Access,     # FETCH, READ or WRITE
    "mask": 8,          # bytes of the qword accessed (byte k = bit k); never 0
    "data": 64,         # WRITE: the bytes to write, in their lanes of the qword
}
#: The core's FSM's request to its prefetcher (`rtl.core.prefetch`), which marks its own.
FSM_REQ_LAYOUT = data.StructLayout(_ACCESS_FIELDS)
MEM_REQ_LAYOUT = data.StructLayout({
    **_ACCESS_FIELDS,
    # A FETCH of the prefetcher's: the core may never use it, so its fault is nobody's to
    # report (the system keeps the last fault of the core's own accesses for VM exits).
    "prefetch": 1,
})

MEM_RESP_LAYOUT = data.StructLayout({
    "data": 64,         # FETCH/READ: the qword (bytes outside `mask` are don't-care)
    "outcome": Outcome,  # OK, or the fault the access raised (nothing was written)
    "error_code": 32,   # the fault's error code (#PF error code, 0 for #GP)
    # WRITE: the write may have changed bytes fetched since the core's last `fetch_flush`, so
    # the core must fetch again (self-modifying code). 1 is always correct; 0 is a promise.
    "code": 1,
})


class CoreState(enum.Enum, shape=5):
    """States of the core's FSM, in the order an instruction passes through them."""
    IDLE = 0        # after reset: waits for `load` (the boot/initial state)
    FETCH = 1       # request the next qword of the instruction window
    FETCH_WAIT = 2  # wait for it
    DEC_WAIT = 3    # the decoder registers the new window
    DECODE = 4      # check the decode (length vs bytes fetched, #UD, #GP, needs unit X), EA
    LOAD = 5        # request a qword of the memory / stack source operand
    LOAD_WAIT = 6
    EXEC = 7        # ALU, condition, targets, write-back values (registered)
    STORE = 8       # request a qword of the memory / stack destination
    STORE_WAIT = 9
    SP_UPDATE = 10  # PUSH/POP/CALL/RET: RSP +- size (before the destination of POP)
    RETIRE = 11     # register write-back, RFLAGS, RIP, retire pulse
    HALTED = 12     # HLT retired
    STOPPED = 13    # exception / unsupported instruction (see `exception`)
    SYS_REQ = 14    # offer the instruction / fault / event on `sys_req`
    SYS_WAIT = 15   # wait for `sys_resp`
    SYS_LOADED = 16  # a qword of a system instruction's memory operand arrived


class StopKind(enum.Enum, shape=2):
    """`exception.kind`."""
    NONE = 0
    FAULT = 1       # an architectural exception: `vector`, `error_code`, `rip` (not retired)
    NEEDS_UNIT = 2  # the instruction needs a unit this core does not have yet (`unit`)


class NeedsUnit(enum.Enum, shape=3):
    """`exception.unit` for StopKind.NEEDS_UNIT: which later unit would execute the instruction."""
    NONE = 0
    CPUID = 1       # CPUID
    TSC = 2         # RDTSC
    MSR = 3         # RDMSR, WRMSR
    CR = 4          # MOV to/from CR0/CR3/CR4
    TLB = 5         # INVLPG (the translation unit's invalidation port)
    IO = 6          # IN, OUT (the system's port bus)
    VMX = 7         # the 13 VMX instructions; also an EPT violation/misconfiguration response


EXCEPTION_LAYOUT = data.StructLayout({
    "valid": 1,
    "kind": StopKind,
    "unit": NeedsUnit,
    "vector": 8,        # FAULT: 6 #UD, 12 #SS, 13 #GP, 14 #PF
    "has_error_code": 1,
    "error_code": 32,
    "rip": 64,          # RIP of the instruction that did not retire
    "addr": 64,         # #PF / EPT: the linear address of the access (CR2)
})


class SysKind(enum.Enum, shape=2):
    """`SYS_REQ_LAYOUT.kind`: what the core hands to the system."""
    INSN = 0        # a decoded instruction of a system class (`cls`)
    FAULT = 1       # the fault in `exception` (root: stop; non-root: exit decision)
    EVENT = 2       # `event_pending` at an instruction boundary (preemption timer, MTF)


class SysAction(enum.Enum, shape=3):
    """`SYS_RESP_LAYOUT.action`: what the core does with the answer."""
    RETIRE = 0      # apply the writes the answer enables; RIP = `rip` if `rip_we` else next RIP
    PROCEED = 1     # load the memory operand (`mem_bytes`: 8 or 16 at the EA), ask again
    STOP = 2        # stop with `exception` as it is (a fault in root operation)
    FAULT = 3       # raise exception `vector` (+ `error_code` when `has_error_code`)
    HALT = 4        # HLT: retire it and wait in HALTED (an event may still wake the core)
    UNSUPPORTED = 5  # no system behind the port: stop with StopKind.NEEDS_UNIT


SYS_REQ_LAYOUT = data.StructLayout({
    "kind": SysKind,
    "loaded": 1,        # INSN: the memory operand has been loaded into `mem_val`
    "cls": 6,           # rtl.core.layouts.InsnClass
    "opsize": 2,        # rtl.core.layouts.OpSize
    "reg": 4,           # ModRM.reg (with REX.R)
    "rm": 4,            # ModRM.rm (with REX.B); a register operand when `mem` = 0
    "mem": 1,           # the r/m operand is memory
    "ea": 64,           # its linear address
    "disp": 32,         # its displacement (VMX instruction exit qualification, see `rip_rel`)
    # How the EA was formed (the VM-exit instruction-information field, SDM 28.2.5): the
    # decoder's SIB scale, index and base (0 when not valid; RIP-relative: neither valid) and
    # the segment register used (Sreg number: FS/GS when overridden, else SS for an RSP/RBP
    # base, else DS; 64-bit mode ignores ES/CS/SS/DS overrides).
    "scale": 2, "index": 4, "index_valid": 1, "base": 4, "base_valid": 1, "seg": 3,
    "rip_rel": 1,       # RIP-relative: `ea` = `disp` + next RIP (the exit qualification)
    "imm": 64,          # immediate (the port of IN/OUT imm8)
    "mem_val": 128,     # the loaded memory operand (with `loaded`)
    "length": 4,        # instruction length (VM-exit instruction length)
})

SYS_RESP_LAYOUT = data.StructLayout({
    "action": SysAction,
    "count": 1,         # RETIRE: the instruction retired (count it, pulse `retired`)
    "mem_bytes": 5,     # PROCEED: 8 or 16
    "vector": 8,        # FAULT
    "has_error_code": 1,
    "error_code": 32,
    # RETIRE writes (each with its enable): RAX, RCX, RDX, RBX (CPUID, RDTSC, RDMSR), one GPR
    # of a size (IN, MOV from CR, VMREAD to a register), RFLAGS, RIP, RSP, CR0/3/4, EFER, and a
    # qword stored at the EA first (VMREAD/VMPTRST to memory).
    "acdb_we": 4,
    "rax": 64, "rcx": 64, "rdx": 64, "rbx": 64,
    "dest_we": 1, "dest": 4, "dest_size": 2, "dest_val": 64,
    "store_we": 1, "store_val": 64,
    "rflags_we": 1, "rflags": 64,
    "rip_we": 1, "rip": 64,
    "rsp_we": 1, "rsp": 64,
    "cr0_we": 1, "cr0": 64,
    "cr3_we": 1, "cr3": 64,
    "cr4_we": 1, "cr4": 64,
    "efer_we": 1, "efer": 64,
})
