# halt.S -- ends with HLT in root operation (the run stops there: there are no interrupts).
#
#   vtx run --dump 0x100000:64 examples/programs/halt.S
#
# Stores 0x2a into `result` (in .data, right after the code) and halts; the tests read it back
# with --dump and check RAX.

        .text
        .globl  _start
_start:
        mov     $0x2a, %eax
        mov     %rax, result(%rip)
        hlt

        .data
        .balign 8
result:
        .quad   0
