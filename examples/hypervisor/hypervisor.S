/*
 * A small VT-x hypervisor for the vtx system (GNU as, AT&T syntax).
 *
 * The system boots it in 64-bit mode, CPL 0, paging on over an identity map of the first 4 GiB,
 * loaded at PROGRAM_BASE (0x100000) with RSP just below it; `_start` is the entry point
 * (docs/system.md). There is no IDT: an exception in root operation stops the system.
 *
 * What it does (README.md next to this file tells the story with the console output):
 *   1. checks CPUID.1:ECX.VMX, reads IA32_VMX_BASIC for the VMCS revision identifier;
 *   2. checks CR0 against IA32_VMX_CR0_FIXED0/1, sets CR4.VMXE and checks CR4 the same way;
 *   3. VMXON, VMCLEAR + VMPTRLD a VMCS;
 *   4. builds two EPT views of the guest's 2 MiB of memory, the EPTP list, the guest's own page
 *      tables, and copies the guest's code into its memory;
 *   5. writes the VMCS: controls (from the TRUE capability MSRs), host state, guest state;
 *   6. VMLAUNCHes the guest, then handles its VM exits until the guest VMCALLs;
 *   7. prints the table of exits it handled, VMCLEARs, VMXOFFs and ends the run (port 0xF4 = 0).
 * Any failure prints the step that failed (and the VM-instruction error read with VMREAD) and
 * ends the run with a non-zero code.
 *
 * Only the instructions of the vtx core are used (docs/core.md): no string instructions, no
 * MUL/DIV, no segment loads; numbers are printed with shifts and subtractions.
 *
 * Physical memory map (host):
 *   0x000000  boot page tables (the loader's), boot stack below 0x100000
 *   0x100000  this program
 *   0x180000  VMXON region                0x181000  VMCS
 *   0x182000  EPT view 0: PML4, PDPT, PD, PT (4 pages)
 *   0x186000  EPT view 1: PML4, PDPT, PD, PT (4 pages)
 *   0x18A000  EPTP list (entry 0 = view 0, entry 1 = view 1)
 *   0x18B000  the page view 1 shows the guest instead of its own
 *   0x1A0000  top of the VM-exit handler's stack (HOST_RSP)
 *   0x200000  guest-physical memory 0 .. 2 MiB (EPT maps GPA g to host 0x200000 + g)
 *
 * Guest-physical map: 0x0000 PML4, 0x1000 PDPT, 0x2000 PD (guest page tables: one 2 MiB page
 * maps guest-linear 0x40000000 to GPA 0), 0x10000 guest code, 0x30000 the page whose EPT
 * mapping differs between the views, 0x40000 the page EPT leaves unmapped until the guest
 * touches it, 0x80000 top of the guest stack.
 */

/* Constants generated from rtl/arch (gen_consts.py): VMCS_* field encodings, control bits,
 * MSR numbers, EXIT_* reasons, VMERR_* errors, the ports. Assemble with -I this directory. */
    .include "vmx_consts.inc"

/* --- memory map ------------------------------------------------------------------------------ */
.set VMXON_HPA,        0x180000
.set VMCS_HPA,         0x181000
.set EPT0_HPA,         0x182000          /* PML4; PDPT, PD, PT follow page by page */
.set EPT1_HPA,         0x186000
.set EPTP_LIST_HPA,    0x18A000
.set ALT_PAGE_HPA,     0x18B000
.set HV_STACK_TOP,     0x1A0000
.set GUEST_RAM_HPA,    0x200000
.set GUEST_RAM_BYTES,  0x200000

.set GUEST_PML4_GPA,   0x0000
.set GUEST_PDPT_GPA,   0x1000
.set GUEST_PD_GPA,     0x2000
.set GUEST_CODE_GPA,   0x10000
.set SHARED_GPA,       0x30000           /* different host page in each EPT view */
.set DEMAND_GPA,       0x40000           /* not mapped by EPT until the guest touches it */
.set GUEST_STACK_GPA,  0x80000

.set GUEST_VA_BASE,    0x40000000        /* guest-linear address of GPA 0 */
.set GUEST_CODE_VA,    GUEST_VA_BASE + GUEST_CODE_GPA
.set SHARED_VA,        GUEST_VA_BASE + SHARED_GPA
.set DEMAND_VA,        GUEST_VA_BASE + DEMAND_GPA
.set GUEST_STACK_VA,   GUEST_VA_BASE + GUEST_STACK_GPA

/* EPT entries: a leaf maps a 4 KiB page read/write/execute with memory type WB (6). */
.set EPT_WB,           6 << EPT_MEMTYPE_SHIFT
.set EPT_LEAF,         EPT_RWX | EPT_WB
.set EPTP_FLAGS,       EPTP_MEMTYPE_WB | (3 << EPTP_WALK_SHIFT)     /* WB, 4-level walk */
.set EPTP_VIEW0,       EPT0_HPA | EPTP_FLAGS
.set EPTP_VIEW1,       EPT1_HPA | EPTP_FLAGS

/* VMX-preemption timer: ticks per arming (rate 0: one count per TSC tick), armings wanted. */
.set TIMER_VALUE,      400
.set TIMER_TICKS,      3

/* The guest's registers, saved by the exit handler at the top of its stack (x86 numbering). */
.set GREG_RAX, 0
.set GREG_RCX, 8
.set GREG_RDX, 16
.set GREG_RBX, 24
.set GREG_SIZE, 128

/* Selectors of the host (our GDT below); the guest uses the same values. */
.set SEL_CODE, 0x08
.set SEL_DATA, 0x10
.set SEL_TSS,  0x18

/* Segment access rights in the VMCS format. */
.set AR_CODE64, 0xB | AR_S | AR_P | AR_L | AR_G          /* execute/read, accessed, 64-bit */
.set AR_DATA,   0x3 | AR_S | AR_P | AR_DB | AR_G         /* read/write, accessed */
.set AR_TSS64,  0xB | AR_P                               /* busy 64-bit TSS */

/* --- macros ------------------------------------------------------------------------------- */

/* Print a string literal (kept out of line in subsection 1). Clobbers rax, rsi. */
.macro SAY text
    .subsection 1
9:  .asciz "\text"
    .subsection 0
    lea 9b(%rip), %rsi
    call puts
.endm

/* Fail with the message `text` if the VMX instruction just executed failed (CF or ZF set). */
.macro CHECK text
    .subsection 1
9:  .asciz "\text"
    .subsection 0
    lea 9b(%rip), %rsi              /* LEA leaves the flags alone */
    jbe vmx_fail
.endm

/* \reg := VMCS field; r11 holds the encoding (printed if the VMREAD fails). */
.macro VMREAD_F field, reg
    mov $\field, %r11d
    vmread %r11, \reg
    jbe vmread_failed
.endm

/* VMCS field := \reg. */
.macro VMWRITE_F field, reg
    mov $\field, %r11d
    vmwrite \reg, %r11
    jbe vmwrite_failed
.endm

/* VMCS field := constant. Clobbers r10. */
.macro VMWRITE_I field, value
    mov $\value, %r10
    VMWRITE_F \field, %r10
.endm

    .text
    .globl _start
_start:
    SAY "[hv] vtx hypervisor demo\n"

/* 1. Does the processor support VMX? CPUID.1:ECX bit 5. */
    mov $1, %eax
    cpuid
    test $(1 << 5), %ecx
    jnz 1f
    lea msg_no_vmx(%rip), %rsi
    jmp fail
1:
/* The VMCS revision identifier: bits 30:0 of IA32_VMX_BASIC. */
    mov $IA32_VMX_BASIC, %ecx
    rdmsr
    and $0x7FFFFFFF, %eax
    mov %eax, revision_id(%rip)
    SAY "[hv] VMX supported, VMCS revision id "
    mov revision_id(%rip), %eax
    call put_hex
    call newline

/* 2. CR0 and CR4 must satisfy the FIXED MSRs in VMX operation; CR4.VMXE enables VMXON. */
    mov %cr0, %r12
    mov $IA32_VMX_CR0_FIXED0, %ecx
    call check_fixed
    jz 1f
    lea msg_cr0(%rip), %rsi
    jmp fail
1:  mov %cr4, %r12
    or $CR4_VMXE, %r12
    mov $IA32_VMX_CR4_FIXED0, %ecx
    call check_fixed
    jz 1f
    lea msg_cr4(%rip), %rsi
    jmp fail
1:  mov %r12, %cr4

/* 3. VMXON with a region holding the revision id; then make our VMCS current. */
    mov $VMXON_HPA, %rdi
    call zero_page
    mov revision_id(%rip), %eax
    mov %eax, VMXON_HPA
    vmxon vmxon_ptr(%rip)
    CHECK "VMXON"
    mov $VMCS_HPA, %rdi
    call zero_page
    mov revision_id(%rip), %eax
    mov %eax, VMCS_HPA
    vmclear vmcs_ptr(%rip)          /* launch state := clear */
    CHECK "VMCLEAR"
    vmptrld vmcs_ptr(%rip)          /* current VMCS := ours (its fields: the zeroed region) */
    CHECK "VMPTRLD"
    SAY "[hv] VMXON done, VMCS loaded\n"

/* 4. Memory: EPT views, EPTP list, the guest's page tables, code and data pages. */
    mov $EPT0_HPA, %rdi
    call build_ept
    mov $EPT1_HPA, %rdi
    call build_ept
    /* View 1 shows the guest another host page at SHARED_GPA. */
    mov $(ALT_PAGE_HPA | EPT_LEAF), %rax
    mov %rax, EPT1_HPA + 0x3000 + (SHARED_GPA >> 12) * 8
    mov $EPTP_LIST_HPA, %rdi
    call zero_page
    mov $EPTP_VIEW0, %rax
    mov %rax, EPTP_LIST_HPA
    mov $EPTP_VIEW1, %rax
    mov %rax, EPTP_LIST_HPA + 8
    call build_guest_memory
    SAY "[hv] EPT views, EPTP list and guest memory ready\n"

/* 5. The VMCS. Controls: what the TRUE capability MSRs require, plus what we use. */
    mov $IA32_VMX_TRUE_PINBASED_CTLS, %ecx
    xor %edi, %edi
    call adjust_controls
    mov %rax, pin_controls(%rip)
    VMWRITE_F VMCS_PIN_BASED_VM_EXEC_CONTROL, %rax
    /* The same with the preemption timer on (the HLT handler arms it). */
    mov $IA32_VMX_TRUE_PINBASED_CTLS, %ecx
    mov $PIN_PREEMPTION_TIMER, %edi
    call adjust_controls
    mov %rax, pin_controls_timer(%rip)

    mov $IA32_VMX_TRUE_PROCBASED_CTLS, %ecx
    mov $(PROC_HLT_EXITING | PROC_UNCONDITIONAL_IO_EXITING | PROC_ACTIVATE_SECONDARY), %edi
    call adjust_controls
    VMWRITE_F VMCS_CPU_BASED_VM_EXEC_CONTROL, %rax

    mov $IA32_VMX_PROCBASED_CTLS2, %ecx
    mov $(PROC2_ENABLE_EPT | PROC2_ENABLE_VPID | PROC2_ENABLE_VM_FUNCTIONS), %edi
    call adjust_controls
    VMWRITE_F VMCS_SECONDARY_VM_EXEC_CONTROL, %rax

    mov $IA32_VMX_TRUE_EXIT_CTLS, %ecx
    mov $(EXIT_CTL_HOST_ADDRESS_SPACE_SIZE | EXIT_CTL_LOAD_EFER), %edi
    call adjust_controls
    VMWRITE_F VMCS_VM_EXIT_CONTROLS, %rax

    mov $IA32_VMX_TRUE_ENTRY_CTLS, %ecx
    mov $(ENTRY_CTL_IA32E_MODE_GUEST | ENTRY_CTL_LOAD_EFER), %edi
    call adjust_controls
    VMWRITE_F VMCS_VM_ENTRY_CONTROLS, %rax

    /* Constant fields: the other controls, host selectors, the guest's registers. */
    lea vmcs_table(%rip), %rsi
    call write_vmcs_table

    /* Host state: where a VM exit lands. Our own control registers and EFER. */
    mov %cr0, %rax
    VMWRITE_F VMCS_HOST_CR0, %rax
    mov %cr3, %rax
    VMWRITE_F VMCS_HOST_CR3, %rax
    mov %cr4, %rax
    VMWRITE_F VMCS_HOST_CR4, %rax
    mov $MSR_EFER, %ecx
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    VMWRITE_F VMCS_HOST_IA32_EFER, %rax
    lea host_gdt(%rip), %rax
    VMWRITE_F VMCS_HOST_GDTR_BASE, %rax
    lea host_tss(%rip), %rax
    VMWRITE_F VMCS_HOST_TR_BASE, %rax
    mov $HV_STACK_TOP, %rax
    VMWRITE_F VMCS_HOST_RSP, %rax
    lea vmexit_entry(%rip), %rax
    VMWRITE_F VMCS_HOST_RIP, %rax

    /* Guest CR0/CR4: what a 64-bit guest needs, adjusted to the FIXED MSRs. */
    mov $(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG), %r12
    mov $IA32_VMX_CR0_FIXED0, %ecx
    call apply_fixed
    VMWRITE_F VMCS_GUEST_CR0, %rax
    mov $CR4_PAE, %r12
    mov $IA32_VMX_CR4_FIXED0, %ecx
    call apply_fixed
    VMWRITE_F VMCS_GUEST_CR4, %rax

/* 6. Launch. VMLAUNCH returns here only if it fails; a VM-entry failure on guest state is a
 *    VM exit with reason 0x80000021 instead (handled in vmexit_entry). */
    SAY "[hv] launching the guest\n"
    vmlaunch
    CHECK "VMLAUNCH"

/* ============================================================================================
 * VM exits. RSP = HOST_RSP, RIP = HOST_RIP, RFLAGS = 2; the guest's GPRs are still in the
 * registers: save them, handle the exit, restore them and VMRESUME.
 * ============================================================================================ */
vmexit_entry:
    sub $GREG_SIZE, %rsp
    mov %rax, 0(%rsp)
    mov %rcx, 8(%rsp)
    mov %rdx, 16(%rsp)
    mov %rbx, 24(%rsp)
    mov %rbp, 40(%rsp)
    mov %rsi, 48(%rsp)
    mov %rdi, 56(%rsp)
    mov %r8, 64(%rsp)
    mov %r9, 72(%rsp)
    mov %r10, 80(%rsp)
    mov %r11, 88(%rsp)
    mov %r12, 96(%rsp)
    mov %r13, 104(%rsp)
    mov %r14, 112(%rsp)
    mov %r15, 120(%rsp)
    mov %rsp, %rbp                  /* rbp = the guest's registers */

    VMREAD_F VMCS_VM_EXIT_REASON, %rax
    test %eax, %eax
    js entry_failed                 /* bit 31: VM-entry failure */
    and $0xFFFF, %eax               /* basic exit reason */
    cmp $EXIT_REASON_COUNT, %eax
    jae unexpected_exit
    lea exit_counts(%rip), %rdx
    addq $1, (%rdx,%rax,8)

    cmp $EXIT_IO_INSTRUCTION, %eax
    je handle_io
    cmp $EXIT_CPUID, %eax
    je handle_cpuid
    cmp $EXIT_EPT_VIOLATION, %eax
    je handle_ept_violation
    cmp $EXIT_HLT, %eax
    je handle_hlt
    cmp $EXIT_PREEMPTION_TIMER, %eax
    je handle_preemption_timer
    cmp $EXIT_VMCALL, %eax
    je handle_vmcall
    jmp unexpected_exit

resume_guest:
    mov %rbp, %rsp
    mov 0(%rsp), %rax
    mov 8(%rsp), %rcx
    mov 16(%rsp), %rdx
    mov 24(%rsp), %rbx
    mov 40(%rsp), %rbp
    mov 48(%rsp), %rsi
    mov 56(%rsp), %rdi
    mov 64(%rsp), %r8
    mov 72(%rsp), %r9
    mov 80(%rsp), %r10
    mov 88(%rsp), %r11
    mov 96(%rsp), %r12
    mov 104(%rsp), %r13
    mov 112(%rsp), %r14
    mov 120(%rsp), %r15
    vmresume
    CHECK "VMRESUME"

/* Exit 30, I/O instruction: the guest's console. Forward a byte OUT to port 0xE9. */
handle_io:
    VMREAD_F VMCS_EXIT_QUALIFICATION, %rax
    mov %rax, %rcx
    and $0x1F, %ecx                 /* size-1 (2:0), IN (3), string (4) */
    jnz unexpected_exit             /* only 1-byte OUT, not INS/OUTS */
    shr $16, %rax                   /* port (31:16) */
    cmp $CONSOLE_PORT, %eax
    jne unexpected_exit
    mov GREG_RAX(%rbp), %rax
    out %al, $CONSOLE_PORT
    call skip_instruction
    jmp resume_guest

/* Exit 10, CPUID: run it for the guest, but with our vendor string and without VMX. */
handle_cpuid:
    mov GREG_RAX(%rbp), %rax
    mov GREG_RCX(%rbp), %rcx
    mov %eax, %r12d                 /* the leaf */
    cpuid
    test %r12d, %r12d
    jnz 1f
    mov hv_vendor(%rip), %ebx       /* leaf 0: "VTXHyperVis!" in EBX, EDX, ECX */
    mov hv_vendor + 4(%rip), %edx
    mov hv_vendor + 8(%rip), %ecx
1:  cmp $1, %r12d
    jne 2f
    and $~(1 << 5), %ecx            /* leaf 1: no VMX for the guest */
2:  mov %eax, %eax                  /* CPUID writes 32-bit registers: zero-extend */
    mov %rax, GREG_RAX(%rbp)
    mov %ebx, %ebx
    mov %rbx, GREG_RBX(%rbp)
    mov %ecx, %ecx
    mov %rcx, GREG_RCX(%rbp)
    mov %edx, %edx
    mov %rdx, GREG_RDX(%rbp)
    call skip_instruction
    jmp resume_guest

/* Exit 48, EPT violation: map the demand page in both views and retry the instruction. */
handle_ept_violation:
    VMREAD_F VMCS_GUEST_PHYSICAL_ADDRESS, %r12
    VMREAD_F VMCS_EXIT_QUALIFICATION, %r13
    SAY "[hv] EPT violation at GPA "
    mov %r12, %rax
    call put_hex
    SAY ", exit qualification "
    mov %r13, %rax
    call put_hex
    call newline
    mov %r12, %rax
    and $~0xFFF, %rax
    cmp $DEMAND_GPA, %rax
    jne unexpected_exit
    cmpq $0, demand_mapped(%rip)
    jne unexpected_exit             /* mapped already: the violation should not repeat */
    movq $1, demand_mapped(%rip)
    /* Fill the page, then map it: the guest reads what we wrote. */
    lea msg_demand_page(%rip), %rsi
    mov $(GUEST_RAM_HPA + DEMAND_GPA), %rdi
    call copy_string
    mov $(GUEST_RAM_HPA + DEMAND_GPA + EPT_LEAF), %rax
    mov %rax, EPT0_HPA + 0x3000 + (DEMAND_GPA >> 12) * 8
    mov %rax, EPT1_HPA + 0x3000 + (DEMAND_GPA >> 12) * 8
    /* Invalidate what the processor may hold for both EPT views (single-context INVEPT). */
    mov $EPTP_VIEW0, %rax
    call invept_single
    mov $EPTP_VIEW1, %rax
    call invept_single
    SAY "[hv] mapped GPA "
    mov $DEMAND_GPA, %eax
    call put_hex
    SAY " to host page "
    mov $(GUEST_RAM_HPA + DEMAND_GPA), %eax
    call put_hex
    SAY ", resuming the guest at the same instruction\n"
    jmp resume_guest                /* RIP not advanced: the access is retried */

/* Exit 12, HLT: the guest waits for a timer. Arm the VMX-preemption timer. */
handle_hlt:
    call skip_instruction
    SAY "[hv] guest HLT: arming the VMX-preemption timer\n"
    mov pin_controls_timer(%rip), %rax
    VMWRITE_F VMCS_PIN_BASED_VM_EXEC_CONTROL, %rax
    VMWRITE_I VMCS_VMX_PREEMPTION_TIMER_VALUE, TIMER_VALUE
    jmp resume_guest

/* Exit 52, preemption timer: count the tick, tell the guest (RBX = ticks so far), re-arm the
 * timer until TIMER_TICKS ticks, then switch it off. The guest's RIP is already right. */
handle_preemption_timer:
    addq $1, timer_ticks(%rip)
    mov timer_ticks(%rip), %rax
    mov %rax, GREG_RBX(%rbp)
    SAY "[hv] preemption timer tick "
    mov timer_ticks(%rip), %rax
    call put_dec
    cmpq $TIMER_TICKS, timer_ticks(%rip)
    jae 1f
    SAY ": re-armed\n"
    VMWRITE_I VMCS_VMX_PREEMPTION_TIMER_VALUE, TIMER_VALUE
    jmp resume_guest
1:  SAY ": timer off\n"
    mov pin_controls(%rip), %rax
    VMWRITE_F VMCS_PIN_BASED_VM_EXEC_CONTROL, %rax
    jmp resume_guest

/* Exit 18, VMCALL: the guest is done. Print the exit table, leave VMX operation, end the run. */
handle_vmcall:
    SAY "[hv] guest VMCALL: the guest is done\n"
    call print_exit_table
    vmclear vmcs_ptr(%rip)
    CHECK "VMCLEAR at the end"
    vmxoff
    CHECK "VMXOFF"
    SAY "[hv] VMXOFF done, bye\n"
    xor %eax, %eax
    out %eax, $EXIT_PORT
    hlt

/* Any other exit: report it and stop with exit code 3. */
unexpected_exit:
    SAY "[hv] FAILED: unexpected VM exit, reason "
    mov $VMCS_VM_EXIT_REASON, %eax
    vmread %rax, %rax
    and $0xFFFF, %eax
    mov %rax, %r12
    call put_dec
    SAY " ("
    mov %r12, %rax
    call put_reason_name
    SAY "), qualification "
    mov $VMCS_EXIT_QUALIFICATION, %eax
    vmread %rax, %rax
    call put_hex
    SAY ", guest RIP "
    mov $VMCS_GUEST_RIP, %eax
    vmread %rax, %rax
    call put_hex
    call newline
    mov $3, %eax
    out %eax, $EXIT_PORT
    hlt

/* VM-entry failure (exit reason bit 31): the guest state failed the checks. Exit code 4. */
entry_failed:
    mov %rax, %r12
    SAY "[hv] FAILED: VM entry failed, exit reason "
    mov %r12, %rax
    call put_hex
    SAY ", exit qualification "
    mov $VMCS_EXIT_QUALIFICATION, %eax
    vmread %rax, %rax
    call put_hex
    call newline
    mov $4, %eax
    out %eax, $EXIT_PORT
    hlt

/* ============================================================================================
 * Helpers of the exit handler
 * ============================================================================================ */

/* GUEST_RIP += VM-exit instruction length (the exiting instruction is done). */
skip_instruction:
    VMREAD_F VMCS_GUEST_RIP, %rax
    VMREAD_F VMCS_VM_EXIT_INSTRUCTION_LEN, %rcx
    add %rcx, %rax
    VMWRITE_F VMCS_GUEST_RIP, %rax
    ret

/* INVEPT single-context for the EPTP in rax. */
invept_single:
    mov %rax, invept_descriptor(%rip)
    mov $1, %eax                    /* type 1: single-context */
    invept invept_descriptor(%rip), %rax
    CHECK "INVEPT"
    ret

/* Print one line per exit reason handled: "[hv]   NAME (number): count", then the total. */
print_exit_table:
    push %r12
    push %r13
    SAY "[hv] VM exits handled:\n"
    xor %r12d, %r12d                /* reason */
    xor %r13d, %r13d                /* total */
1:  lea exit_counts(%rip), %rdx
    mov (%rdx,%r12,8), %rax
    test %rax, %rax
    jz 2f
    add %rax, %r13
    SAY "[hv]   "
    mov %r12, %rax
    call put_reason_name
    SAY " ("
    mov %r12, %rax
    call put_dec
    SAY "): "
    lea exit_counts(%rip), %rdx
    mov (%rdx,%r12,8), %rax
    call put_dec
    call newline
2:  inc %r12
    cmp $EXIT_REASON_COUNT, %r12
    jb 1b
    SAY "[hv]   total: "
    mov %r13, %rax
    call put_dec
    call newline
    pop %r13
    pop %r12
    ret

/* Print the name of exit reason rax (from the generated table). */
put_reason_name:
    lea exit_reason_name_offsets(%rip), %rdx
    movzwl (%rdx,%rax,2), %eax
    cmp $0xFFFF, %eax
    je 1f
    lea exit_reason_name_strings(%rip), %rsi
    add %rax, %rsi
    jmp puts
1:  SAY "?"
    ret

/* ============================================================================================
 * Setup helpers
 * ============================================================================================ */

/* rax := (wanted bits in edi) | (bits the capability MSR ecx requires); fail if a wanted bit
 * is not allowed. Capability MSRs: bits 31:0 = must be 1, bits 63:32 = may be 1. */
adjust_controls:
    mov %edi, %r8d
    rdmsr
    or %r8d, %eax
    mov %edx, %r9d
    not %r9d
    test %r9d, %eax
    jnz 1f
    ret
1:  lea msg_controls(%rip), %rsi
    jmp fail

/* ZF := (r12 has every bit of the FIXED0 MSR ecx and no bit outside FIXED1 = MSR ecx + 1). */
check_fixed:
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r8                   /* FIXED0: bits that must be 1 */
    inc %ecx
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r9                   /* FIXED1: bits that may be 1 */
    mov %r12, %rax
    and %r8, %rax
    cmp %r8, %rax
    jne 1f
    not %r9
    test %r9, %r12
1:  ret

/* rax := (r12 | FIXED0) & FIXED1, FIXED0 = MSR ecx, FIXED1 = MSR ecx + 1. */
apply_fixed:
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    or %rax, %r12
    inc %ecx
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    and %r12, %rax
    ret

/* VMWRITE each (encoding, value) pair of the table at rsi, up to the encoding -1. */
write_vmcs_table:
    mov (%rsi), %r11
    cmp $-1, %r11
    je 1f
    mov 8(%rsi), %r10
    vmwrite %r10, %r11
    jbe vmwrite_failed
    add $16, %rsi
    jmp write_vmcs_table
1:  ret

/* An EPT view at rdi (PML4, PDPT, PD, PT in 4 consecutive pages): GPA 0 .. 2 MiB maps to
 * host GUEST_RAM_HPA + GPA with 4 KiB pages, except DEMAND_GPA (not present). */
build_ept:
    push %r12
    mov %rdi, %r12
    call zero_page                  /* PML4 */
    lea 0x1000(%r12), %rdi
    call zero_page                  /* PDPT */
    lea 0x2000(%r12), %rdi
    call zero_page                  /* PD */
    lea (0x1000 + EPT_RWX)(%r12), %rax
    mov %rax, (%r12)                /* PML4[0] -> PDPT */
    lea (0x2000 + EPT_RWX)(%r12), %rax
    mov %rax, 0x1000(%r12)          /* PDPT[0] -> PD */
    lea (0x3000 + EPT_RWX)(%r12), %rax
    mov %rax, 0x2000(%r12)          /* PD[0] -> PT */
    lea 0x3000(%r12), %rdi          /* PT: 512 leaves */
    mov $(GUEST_RAM_HPA | EPT_LEAF), %rax
    mov $512, %ecx
1:  mov %rax, (%rdi)
    add $0x1000, %rax
    add $8, %rdi
    dec %ecx
    jnz 1b
    movq $0, 0x3000 + (DEMAND_GPA >> 12) * 8(%r12)
    pop %r12
    ret

/* The guest's memory (written through host-physical GUEST_RAM_HPA + GPA): page tables with
 * one 2 MiB page mapping guest-linear GUEST_VA_BASE to GPA 0, the code, and the contents of
 * the page both EPT views map differently. */
build_guest_memory:
    mov $(GUEST_RAM_HPA + GUEST_PML4_GPA), %rdi
    call zero_page
    mov $(GUEST_RAM_HPA + GUEST_PDPT_GPA), %rdi
    call zero_page
    mov $(GUEST_RAM_HPA + GUEST_PD_GPA), %rdi
    call zero_page
    mov $(GUEST_PDPT_GPA | PTE_P | PTE_RW), %eax
    mov %rax, GUEST_RAM_HPA + GUEST_PML4_GPA + ((GUEST_VA_BASE >> 39) & 511) * 8
    mov $(GUEST_PD_GPA | PTE_P | PTE_RW), %eax
    mov %rax, GUEST_RAM_HPA + GUEST_PDPT_GPA + ((GUEST_VA_BASE >> 30) & 511) * 8
    mov $(0 | PTE_P | PTE_RW | PTE_PS), %eax
    mov %rax, GUEST_RAM_HPA + GUEST_PD_GPA + ((GUEST_VA_BASE >> 21) & 511) * 8
    /* Copy the guest's code and data (qwords). */
    lea guest_image(%rip), %rsi
    mov $(GUEST_RAM_HPA + GUEST_CODE_GPA), %rdi
    mov $((guest_image_end - guest_image + 7) / 8), %ecx
1:  mov (%rsi), %rax
    mov %rax, (%rdi)
    add $8, %rsi
    add $8, %rdi
    dec %ecx
    jnz 1b
    /* The page at SHARED_GPA: the guest's own in view 0, ALT_PAGE_HPA in view 1. */
    lea msg_view0_page(%rip), %rsi
    mov $(GUEST_RAM_HPA + SHARED_GPA), %rdi
    call copy_string
    lea msg_view1_page(%rip), %rsi
    mov $ALT_PAGE_HPA, %rdi
    jmp copy_string

/* Zero the 4 KiB page at rdi. */
zero_page:
    mov $512, %ecx
    xor %eax, %eax
1:  mov %rax, (%rdi)
    add $8, %rdi
    dec %ecx
    jnz 1b
    ret

/* Copy the NUL-terminated string at rsi to rdi (with the NUL). */
copy_string:
    movzbl (%rsi), %eax
    mov %al, (%rdi)
    inc %rsi
    inc %rdi
    test %al, %al
    jnz copy_string
    ret

/* ============================================================================================
 * Console output and failures
 * ============================================================================================ */

/* Print the NUL-terminated string at rsi. Clobbers rax, rsi. */
puts:
    movzbl (%rsi), %eax
    test %al, %al
    jz 1f
    out %al, $CONSOLE_PORT
    inc %rsi
    jmp puts
1:  ret

newline:
    mov $'\n', %al
    out %al, $CONSOLE_PORT
    ret

/* Print rax in hexadecimal ("0x..." without leading zeros). Clobbers rax, rcx, rdx, r8. */
put_hex:
    mov %rax, %rdx
    mov $'0', %al
    out %al, $CONSOLE_PORT
    mov $'x', %al
    out %al, $CONSOLE_PORT
    mov $60, %ecx
    xor %r8d, %r8d                  /* 1 once a digit has been printed */
1:  mov %rdx, %rax
    shr %cl, %rax
    and $0xF, %eax
    jnz 2f
    test %r8d, %r8d
    jnz 2f
    test %ecx, %ecx
    jnz 4f                          /* leading zero: skip (but print the last digit) */
2:  mov $1, %r8d
    cmp $10, %eax
    jb 3f
    add $('a' - '0' - 10), %eax
3:  add $'0', %eax
    out %al, $CONSOLE_PORT
4:  sub $4, %ecx
    jns 1b
    ret

/* Print rax in decimal, by subtracting powers of ten (there is no DIV). Clobbers rax, rcx,
 * rdx, r8, r9. */
put_dec:
    lea powers_of_ten(%rip), %r8
    xor %r9d, %r9d                  /* 1 once a digit has been printed */
1:  mov (%r8), %rcx
    mov $'0', %edx
2:  cmp %rcx, %rax
    jb 3f
    sub %rcx, %rax
    inc %edx
    jmp 2b
3:  cmp $'0', %edx
    jne 4f
    test %r9d, %r9d
    jnz 4f
    cmp $1, %rcx
    jne 5f                          /* leading zero: skip (but print the last digit) */
4:  mov $1, %r9d
    push %rax
    mov %edx, %eax
    out %al, $CONSOLE_PORT
    pop %rax
5:  add $8, %r8
    cmp $1, %rcx
    jne 1b
    ret

/* A VMX instruction failed (flags as it left them): print the step (rsi) and how it failed:
 * VMfailInvalid (CF = 1) or VMfailValid (ZF = 1) with the VM-instruction error. Exit code 1. */
vmx_fail:
    pushfq
    pop %r12                        /* RFLAGS of the failure */
    mov %rsi, %r13
    SAY "[hv] FAILED: "
    mov %r13, %rsi
    call puts
vmx_fail_how:
    test $RFLAGS_CF, %r12
    jz 1f
    SAY " (VMfailInvalid)\n"
    jmp 2f
1:  SAY " (VMfailValid, VM-instruction error "
    mov $VMCS_VM_INSTRUCTION_ERROR, %eax
    vmread %rax, %rax
    call put_dec
    SAY ")\n"
2:  mov $1, %eax
    out %eax, $EXIT_PORT
    hlt

/* VMREAD / VMWRITE of the field r11 failed. */
vmread_failed:
    pushfq
    pop %r12
    SAY "[hv] FAILED: VMREAD of field "
    jmp 1f
vmwrite_failed:
    pushfq
    pop %r12
    SAY "[hv] FAILED: VMWRITE of field "
1:  mov %r11, %rax
    call put_hex
    jmp vmx_fail_how

/* A failure that is not a VMX instruction's: print the message at rsi, exit code 2. */
fail:
    mov %rsi, %r13
    SAY "[hv] FAILED: "
    mov %r13, %rsi
    call puts
    call newline
    mov $2, %eax
    out %eax, $EXIT_PORT
    hlt

/* ============================================================================================
 * Data
 * ============================================================================================ */
    .balign 8
vmxon_ptr:          .quad VMXON_HPA
vmcs_ptr:           .quad VMCS_HPA
invept_descriptor:  .quad 0, 0
revision_id:        .quad 0
pin_controls:       .quad 0             /* pin-based controls, timer off */
pin_controls_timer: .quad 0             /* pin-based controls, timer on */
timer_ticks:        .quad 0
demand_mapped:      .quad 0
exit_counts:        .fill EXIT_REASON_COUNT, 8, 0

powers_of_ten:
    .quad 10000000000000000000, 1000000000000000000, 100000000000000000, 10000000000000000
    .quad 1000000000000000, 100000000000000, 10000000000000, 1000000000000, 100000000000
    .quad 10000000000, 1000000000, 100000000, 10000000, 1000000, 100000, 10000, 1000, 100
    .quad 10, 1

/* The host's GDT and TSS: the VMCS names their addresses and selectors (the core keeps no
 * descriptor cache to reload from them, but a real processor would). */
    .balign 16
host_gdt:
    .quad 0                             /* null */
    .quad 0x00AF9B000000FFFF            /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF93000000FFFF            /* 0x10: data, DPL 0 */
    .quad 0, 0                          /* 0x18: 64-bit TSS (filled by nobody: no task switches) */
host_tss:
    .fill 104, 1, 0

hv_vendor:          .ascii "VTXHyperVis!"

/* Fields with constant values: (encoding, value) pairs, ended by -1. */
    .balign 8
vmcs_table:
    /* Controls */
    .quad VMCS_VIRTUAL_PROCESSOR_ID, 1
    .quad VMCS_EPT_POINTER, EPTP_VIEW0
    .quad VMCS_VM_FUNCTION_CONTROL, VMFUNC_EPTP_SWITCHING
    .quad VMCS_EPTP_LIST_ADDRESS, EPTP_LIST_HPA
    .quad VMCS_EXCEPTION_BITMAP, 0      /* guest exceptions stay in the guest */
    .quad VMCS_CR3_TARGET_COUNT, 0
    .quad VMCS_VM_EXIT_MSR_STORE_COUNT, 0
    .quad VMCS_VM_EXIT_MSR_LOAD_COUNT, 0
    .quad VMCS_VM_ENTRY_MSR_LOAD_COUNT, 0
    .quad VMCS_VM_ENTRY_INTR_INFO_FIELD, 0   /* nothing to inject */
    .quad VMCS_CR0_GUEST_HOST_MASK, 0   /* the guest owns CR0 and CR4 */
    .quad VMCS_CR4_GUEST_HOST_MASK, 0
    /* Host selectors and the bases not set at run time */
    .quad VMCS_HOST_CS_SELECTOR, SEL_CODE
    .quad VMCS_HOST_SS_SELECTOR, SEL_DATA
    .quad VMCS_HOST_DS_SELECTOR, SEL_DATA
    .quad VMCS_HOST_ES_SELECTOR, SEL_DATA
    .quad VMCS_HOST_FS_SELECTOR, 0
    .quad VMCS_HOST_GS_SELECTOR, 0
    .quad VMCS_HOST_TR_SELECTOR, SEL_TSS
    .quad VMCS_HOST_FS_BASE, 0
    .quad VMCS_HOST_GS_BASE, 0
    .quad VMCS_HOST_IDTR_BASE, 0        /* no IDT */
    /* Guest: 64-bit mode, CPL 0, flat segments, its own page tables */
    .quad VMCS_GUEST_CR3, GUEST_PML4_GPA
    .quad VMCS_GUEST_IA32_EFER, EFER_LME | EFER_LMA
    .quad VMCS_GUEST_RIP, GUEST_CODE_VA + (guest_entry - guest_image)
    .quad VMCS_GUEST_RSP, GUEST_STACK_VA
    .quad VMCS_GUEST_RFLAGS, RFLAGS_FIXED1
    .quad VMCS_GUEST_CS_SELECTOR, SEL_CODE
    .quad VMCS_GUEST_CS_BASE, 0
    .quad VMCS_GUEST_CS_LIMIT, 0xFFFFFFFF
    .quad VMCS_GUEST_CS_AR_BYTES, AR_CODE64
    .irp seg, ES, SS, DS, FS, GS
    .quad VMCS_GUEST_\seg\()_SELECTOR, SEL_DATA
    .quad VMCS_GUEST_\seg\()_BASE, 0
    .quad VMCS_GUEST_\seg\()_LIMIT, 0xFFFFFFFF
    .quad VMCS_GUEST_\seg\()_AR_BYTES, AR_DATA
    .endr
    .quad VMCS_GUEST_TR_SELECTOR, SEL_TSS
    .quad VMCS_GUEST_TR_BASE, 0
    .quad VMCS_GUEST_TR_LIMIT, 0x67
    .quad VMCS_GUEST_TR_AR_BYTES, AR_TSS64
    .quad VMCS_GUEST_LDTR_SELECTOR, 0
    .quad VMCS_GUEST_LDTR_AR_BYTES, AR_UNUSABLE
    .quad VMCS_GUEST_GDTR_BASE, 0
    .quad VMCS_GUEST_GDTR_LIMIT, 0xFFFF
    .quad VMCS_GUEST_IDTR_BASE, 0
    .quad VMCS_GUEST_IDTR_LIMIT, 0
    .quad VMCS_GUEST_ACTIVITY_STATE, 0  /* active */
    .quad VMCS_GUEST_INTERRUPTIBILITY_INFO, 0
    .quad VMCS_GUEST_PENDING_DBG_EXCEPTIONS, 0
    .quad VMCS_VMCS_LINK_POINTER, -1    /* no shadow VMCS */
    .quad -1

    EXIT_REASON_NAMES

msg_no_vmx:      .asciz "CPUID.1:ECX.VMX is 0: no VMX"
msg_cr0:         .asciz "CR0 does not satisfy IA32_VMX_CR0_FIXED0/1"
msg_cr4:         .asciz "CR4 with VMXE does not satisfy IA32_VMX_CR4_FIXED0/1"
msg_controls:    .asciz "a VM-execution control we need is not allowed by its capability MSR"
msg_demand_page: .asciz "this page was mapped on demand by the hypervisor"
msg_view0_page:  .asciz "the guest's own page (EPT view 0)"
msg_view1_page:  .asciz "a page of the hypervisor (EPT view 1)"

/* ============================================================================================
 * The guest. Copied to GPA GUEST_CODE_GPA and run at guest-linear GUEST_CODE_VA with its own
 * paging, under EPT. Position-independent: it only uses RIP-relative and absolute guest
 * addresses. Every OUT, CPUID, HLT and VMCALL exits to the hypervisor.
 * ============================================================================================ */
    .balign 16
guest_image:
guest_entry:
    lea g_hello(%rip), %rsi
    call g_puts

    /* CPUID leaf 0: the vendor string, as the hypervisor answers it. */
    xor %eax, %eax
    xor %ecx, %ecx
    cpuid
    lea g_vendor(%rip), %rdi
    mov %ebx, (%rdi)
    mov %edx, 4(%rdi)
    mov %ecx, 8(%rdi)
    lea g_cpuid(%rip), %rsi
    call g_puts
    lea g_vendor(%rip), %rsi
    call g_puts
    call g_newline

    /* Read a page EPT does not map yet: EPT violation, the hypervisor maps it, we retry. */
    lea g_demand(%rip), %rsi
    call g_puts
    mov $DEMAND_VA, %rsi
    movzbl (%rsi), %eax             /* exits (EPT violation) and is retried once mapped */
    lea g_demand_reads(%rip), %rsi
    call g_puts
    mov $DEMAND_VA, %rsi
    call g_puts
    call g_newline

    /* The same guest address in two EPT views: VMFUNC 0 (EPTP switching) picks the view. */
    lea g_view0(%rip), %rsi
    call g_puts
    mov $SHARED_VA, %rsi
    call g_puts
    call g_newline
    xor %eax, %eax                  /* VM function 0: EPTP switching */
    mov $1, %ecx                    /* EPTP-list entry 1 */
    vmfunc
    lea g_view1(%rip), %rsi
    call g_puts
    mov $SHARED_VA, %rsi
    call g_puts
    call g_newline
    xor %eax, %eax
    xor %ecx, %ecx                  /* back to view 0 */
    vmfunc

    /* Wait for the timer: HLT exits, the hypervisor arms the preemption timer, and each timer
     * exit sets RBX to the number of ticks so far. */
    lea g_wait(%rip), %rsi
    call g_puts
    xor %ebx, %ebx
    hlt
1:  cmp $TIMER_TICKS, %rbx
    jb 1b
    lea g_ticks(%rip), %rsi
    call g_puts
    lea '0'(%rbx), %eax
    out %al, $CONSOLE_PORT
    call g_newline

    lea g_bye(%rip), %rsi
    call g_puts
    vmcall                          /* done: the hypervisor ends the run */
2:  jmp 2b

g_puts:
    movzbl (%rsi), %eax
    test %al, %al
    jz 1f
    out %al, $CONSOLE_PORT          /* exits: the hypervisor prints the byte */
    inc %rsi
    jmp g_puts
1:  ret

g_newline:
    mov $'\n', %al
    out %al, $CONSOLE_PORT
    ret

g_hello:  .asciz "[guest] hello from a 64-bit guest with its own page tables, under EPT\n"
g_cpuid:  .asciz "[guest] CPUID vendor: "
g_demand: .asciz "[guest] reading a page EPT does not map yet\n"
g_demand_reads: .asciz "[guest] it reads: "
g_view0:  .asciz "[guest] EPT view 0 reads: "
g_view1:  .asciz "[guest] after VMFUNC to view 1: "
g_wait:   .asciz "[guest] HLT: waiting for the preemption timer\n"
g_ticks:  .asciz "[guest] preemption-timer ticks seen: "
g_bye:    .asciz "[guest] done, VMCALL\n"
g_vendor: .asciz "............"
    .balign 8
guest_image_end:
/* (tests/test_hypervisor_demo.py checks that the image fits below SHARED_GPA.) */
