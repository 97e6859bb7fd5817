# exit_code.S -- the shortest run: two instructions, exit code 3.
#
#   vtx run --sim amaranth examples/programs/exit_code.S
#
# `vtx run` itself exits 0 (the simulation ran); the program's code is in the summary and in
# the JSON (`"exit": {"kind": "exit_port", "code": 3}`).

        .text
        .globl  _start
_start:
        mov     $3, %eax
        out     %eax, $0xf4
