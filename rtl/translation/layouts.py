"""Ports of the translation unit: request/response/context/memory/invalidation layouts.

The layouts are `data.StructLayout`s built from the unit's parameters, so the RTL, the testbenches
(which pack and unpack the flattened Verilog ports with them) and the CLI share one definition.
"""

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import Access, Invalidation, Outcome, PageSize

COUNTER_WIDTH = 48
COUNTERS = ("requests", "tlb_hits", "walks", "mem_reads", "mem_writes", "busy_cycles")


def request_layout(tag_width):
    return data.StructLayout({
        "tag": tag_width,       # caller's tag, echoed in the response
        "gla": 64,              # guest-linear address
        "access": Access,
        "cpl": 2,
    })


def response_layout(tag_width, maxphyaddr):
    return data.StructLayout({
        "tag": tag_width,
        "outcome": Outcome,
        "gla": 64,
        "gpa": maxphyaddr,          # final GPA (ok), or the GPA of the faulting EPT access
        "hpa": maxphyaddr,          # ok only
        "error_code": 5,            # page_fault only: P, W/R, U/S, RSVD, I/D
        "qualification": 9,         # ept_violation only: bits 8:0 of the exit qualification
        "page_size": PageSize,      # ok only: size of the final translation
        "mem_reads": 8,             # paging-structure reads this request's walk made (0 on a hit)
    })


def context_layout():
    """The translation context: the guest's control registers and the EPT controls.

    It may change only while the unit is idle (`idle` = 1); changing CR3, paging modes or the
    EPTP needs the matching invalidation first, as on silicon (MOV CR3 and INVEPT do this).
    """
    return data.StructLayout({
        "cr0": 32,
        "cr3": 64,
        "cr4": 32,
        "efer": 32,
        "eptp": 64,
        "ept_enable": 1,
        "vpid": 16,
    })


def mem_request_layout(tag_width, maxphyaddr):
    """A read (write=0) of the 64-bit word at `addr`, or an atomic bit-set (write=1).

    Writes carry only the accessed/dirty flags to set: `data` is OR-ed into the word by the memory
    side, which is how the locked read-modify-write of an A/D update reaches memory. Writes get
    no response.
    """
    return data.StructLayout({
        "tag": tag_width,
        "addr": maxphyaddr,
        "write": 1,
        "data": 64,
    })


def mem_response_layout(tag_width):
    return data.StructLayout({
        "tag": tag_width,
        "data": 64,
    })


def invalidation_layout():
    return data.StructLayout({
        "kind": Invalidation,
        "vpid": 16,
        "eptp": 64,
        "gla": 64,
    })


def translation_signature(*, tag_width, mem_tag_width, maxphyaddr):
    return wiring.Signature({
        "req": In(stream.Signature(request_layout(tag_width))),
        "resp": Out(stream.Signature(response_layout(tag_width, maxphyaddr))),
        "ctx": In(context_layout()),
        "mem_req": Out(stream.Signature(mem_request_layout(mem_tag_width, maxphyaddr))),
        "mem_resp": In(stream.Signature(mem_response_layout(mem_tag_width))),
        "inval": In(stream.Signature(invalidation_layout())),
        "idle": Out(1),
        "counters": Out(data.StructLayout({name: COUNTER_WIDTH for name in COUNTERS})),
    })
