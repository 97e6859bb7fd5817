# hello.S -- the smallest complete `vtx run` program.
#
#   vtx run examples/programs/hello.S
#
# Prints "Hello, world!" through the console port, adds 1..10 into RBX (55, which the tests
# check), and ends the run through the exit port with code 0. The ports and the boot state are
# described in docs/system.md: the program starts at _start in 64-bit mode with paging on over
# an identity map, RSP at 0x100000 (the stack grows down below the program).

        .set    CONSOLE_PORT, 0xe9      # OUT: print the low byte of AL
        .set    EXIT_PORT, 0xf4         # OUT: end the run; exit code = the value written

        .text
        .globl  _start
_start:
        lea     message(%rip), %rsi
        call    puts                    # exercises CALL/RET and the stack

        xor     %ebx, %ebx              # RBX = 1 + 2 + ... + 10
        mov     $10, %ecx
1:      add     %rcx, %rbx
        dec     %rcx
        jnz     1b

        xor     %eax, %eax              # exit code 0
        out     %eax, $EXIT_PORT
        hlt                             # not reached: the exit port ends the run

# puts: print the NUL-terminated string at RSI through the console port.
puts:
        push    %rax
2:      movzbl  (%rsi), %eax
        test    %al, %al
        jz      3f
        out     %al, $CONSOLE_PORT
        inc     %rsi
        jmp     2b
3:      pop     %rax
        ret

        .section .rodata
message:
        .asciz  "Hello, world!\n"
