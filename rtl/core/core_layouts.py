"""The execution engine's interfaces (`rtl.core.core.Core`; docs/core.md "The execution engine").

* `MEM_REQ_LAYOUT` / `MEM_RESP_LAYOUT`: the memory port, one qword-aligned access per request,
  kind `rtl.arch.paging.Access` (FETCH/READ/WRITE), and a response carrying the data or a fault
  (`rtl.arch.paging.Outcome` + error code), so a translation unit can sit between core and RAM;
* `CoreState`: the FSM states (an enum, so a waveform says where the core is);
* `StopKind`, `NeedsUnit`, `EXCEPTION_LAYOUT`: why the core stopped.
"""

from amaranth.lib import data, enum

from ..arch.paging import Access, Outcome

__all__ = ["MEM_REQ_LAYOUT", "MEM_RESP_LAYOUT", "CoreState", "StopKind", "NeedsUnit",
           "EXCEPTION_LAYOUT", "VECTOR_UD", "VECTOR_SS", "VECTOR_GP", "VECTOR_PF"]

VECTOR_UD = 6
VECTOR_SS = 12
VECTOR_GP = 13
VECTOR_PF = 14

MEM_REQ_LAYOUT = data.StructLayout({
    "addr": 64,         # linear address, qword aligned (bits 2:0 are 0)
    "kind": Access,     # FETCH, READ or WRITE
    "mask": 8,          # bytes of the qword accessed (byte k = bit k); never 0
    "data": 64,         # WRITE: the bytes to write, in their lanes of the qword
})

MEM_RESP_LAYOUT = data.StructLayout({
    "data": 64,         # FETCH/READ: the qword (bytes outside `mask` are don't-care)
    "outcome": Outcome,  # OK, or the fault the access raised (nothing was written)
    "error_code": 32,   # the fault's error code (#PF error code, 0 for #GP)
})


class CoreState(enum.Enum, shape=4):
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
