# fault.S -- ends with a page fault in root operation.
#
#   vtx run --trace examples/programs/fault.S
#
# The boot page tables map only the first 4 GiB, so a read of 0x100000000 finds a not-present
# PDPT entry: #PF with error code 0 (read, not present, supervisor) and the faulting address.
# Root operation has no IDT here, so the fault stops the run and is reported (vector, error
# code, RIP of the faulting instruction, address).

        .text
        .globl  _start
_start:
        mov     $7, %ecx
        movabs  $0x100000000, %rbx
        mov     (%rbx), %rax            # faults: RAX keeps 0, RCX shows the program ran
        hlt                             # not reached
