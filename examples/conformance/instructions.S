/*
 * VMX conformance: the outcomes of the VMX instructions in root operation (no VM entry).
 *
 * Every VM-instruction error number the design can produce without a VM entry (1, 2, 3, 5,
 * 9, 10, 11, 12, 13, 15, 28), VMfailInvalid whenever there is no current VMCS, VMsucceed, and
 * the MUST rows of the VMX reference (docs/vmx.md, "Sources") that software can observe: a successful
 * instruction leaves the error field alone (K-t try_invvpid), the high access of 64-bit fields
 * (K-c test_vmcs_high), VMCLEAR flushing (K-c test_vmclear_flushing), VMPTRLD switching keeps
 * each VMCS's values (K-c test_vmcs_lifecycle), a failing VMPTRLD reports into and keeps the
 * current VMCS (reference 2.1).
 *
 * Prints "PASS name" / "FAIL name: ..." per case; the exit code is the number of failures.
 * The case names are listed in cases.py (tests/test_conformance.py checks both agree).
 */
    .include "conf.inc"

    .text
    .globl _start
_start:
    mov %cr4, %rax
    or $CR4_VMXE, %rax
    mov %rax, %cr4
    mov $VMXON_HPA, %rdi
    xor %edx, %edx
    call init_region
    mov $VMCS_A, %rdi
    xor %edx, %edx
    call init_region
    mov $VMCS_B, %rdi
    xor %edx, %edx
    call init_region
    mov $BAD_REV, %rdi
    xor %edx, %edx
    call init_region
    xorl $0x5A5A, BAD_REV           /* a revision identifier that is not ours */
    mov $SHADOW_REV, %rdi
    mov $0x80000000, %edx           /* bit 31: shadow VMCS */
    call init_region

/* --- VMXON outside VMX operation: every failure is VMfailInvalid --------------------------- */
    OPERAND VMXON_HPA + 8
    vmxon operand(%rip)
    EXPECT_FLAGS vmxon_misaligned_is_vmfail_invalid, RFLAGS_CF
    OPERAND 1 << 40
    vmxon operand(%rip)
    EXPECT_FLAGS vmxon_beyond_maxphyaddr_is_vmfail_invalid, RFLAGS_CF
    OPERAND BAD_REV
    vmxon operand(%rip)
    EXPECT_FLAGS vmxon_bad_revision_is_vmfail_invalid, RFLAGS_CF
    OPERAND SHADOW_REV
    vmxon operand(%rip)
    EXPECT_FLAGS vmxon_revision_bit31_is_vmfail_invalid, RFLAGS_CF
    OPERAND VMXON_HPA
    vmxon operand(%rip)
    EXPECT_FLAGS vmxon_succeeds, 0

/* --- root operation, no current VMCS: VMfail is VMfailInvalid ------------------------------- */
    OPERAND VMXON_HPA
    vmxon operand(%rip)
    EXPECT_FLAGS vmxon_in_root_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    movq $0, operand(%rip)
    vmptrst operand(%rip)
    EXPECT_FLAGS vmptrst_without_vmcs_succeeds, 0
    mov operand(%rip), %rax
    EXPECT_RAX vmptrst_without_vmcs_stores_all_ones, -1
    mov $VMCS_GUEST_RIP, %edx
    vmread %rdx, %rax
    EXPECT_FLAGS vmread_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    mov $VMCS_GUEST_RIP, %edx
    vmwrite %rax, %rdx
    EXPECT_FLAGS vmwrite_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    vmlaunch
    EXPECT_FLAGS vmlaunch_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    vmresume
    EXPECT_FLAGS vmresume_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    OPERAND VMCS_A + 8
    vmptrld operand(%rip)
    EXPECT_FLAGS vmptrld_misaligned_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    OPERAND VMXON_HPA
    vmclear operand(%rip)
    EXPECT_FLAGS vmclear_vmxon_pointer_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    vmcall
    EXPECT_FLAGS vmcall_in_root_without_vmcs_is_vmfail_invalid, RFLAGS_CF
    mov $2, %eax
    lea bad_type_descriptor(%rip), %rcx
    invept (%rcx), %rax
    EXPECT_FLAGS invept_without_vmcs_succeeds, 0

/* --- make VMCS A current --------------------------------------------------------------------- */
    OPERAND VMCS_A
    vmclear operand(%rip)
    EXPECT_FLAGS vmclear_succeeds, 0
    vmptrld operand(%rip)
    EXPECT_FLAGS vmptrld_succeeds, 0
    movq $0, operand(%rip)
    vmptrst operand(%rip)
    mov operand(%rip), %rax
    EXPECT_RAX vmptrst_stores_current_vmcs, VMCS_A

/* --- VMfailValid: the error number in the current VMCS --------------------------------------- */
    vmcall
    EXPECT_ERROR vmcall_in_root_is_error_1, VMERR_VMCALL_IN_ROOT
    OPERAND VMCS_B + 0x800
    vmclear operand(%rip)
    EXPECT_ERROR vmclear_misaligned_is_error_2, VMERR_VMCLEAR_INVALID_ADDRESS
    OPERAND (1 << 40) | VMCS_B
    vmclear operand(%rip)
    EXPECT_ERROR vmclear_beyond_maxphyaddr_is_error_2, VMERR_VMCLEAR_INVALID_ADDRESS
    OPERAND VMXON_HPA
    vmclear operand(%rip)
    EXPECT_ERROR vmclear_vmxon_pointer_is_error_3, VMERR_VMCLEAR_VMXON_POINTER
    vmresume
    EXPECT_ERROR vmresume_clear_vmcs_is_error_5, VMERR_VMRESUME_NONLAUNCHED_VMCS
    OPERAND VMCS_B + 4
    vmptrld operand(%rip)
    EXPECT_ERROR vmptrld_misaligned_is_error_9, VMERR_VMPTRLD_INVALID_ADDRESS
    OPERAND (1 << 40) | VMCS_B
    vmptrld operand(%rip)
    EXPECT_ERROR vmptrld_beyond_maxphyaddr_is_error_9, VMERR_VMPTRLD_INVALID_ADDRESS
    OPERAND VMXON_HPA
    vmptrld operand(%rip)
    EXPECT_ERROR vmptrld_vmxon_pointer_is_error_10, VMERR_VMPTRLD_VMXON_POINTER
    OPERAND BAD_REV
    vmptrld operand(%rip)
    EXPECT_ERROR vmptrld_bad_revision_is_error_11, VMERR_VMPTRLD_INCORRECT_REVISION
    OPERAND SHADOW_REV
    vmptrld operand(%rip)
    EXPECT_ERROR vmptrld_shadow_vmcs_is_error_11, VMERR_VMPTRLD_INCORRECT_REVISION
    movq $0, operand(%rip)
    vmptrst operand(%rip)
    mov operand(%rip), %rax
    EXPECT_RAX failed_vmptrld_keeps_current_vmcs, VMCS_A

    mov $0x6C18, %edx               /* after HOST_RIP (0x6C16): no such field */
    vmread %rdx, %rax
    EXPECT_ERROR vmread_unknown_field_is_error_12, VMERR_UNSUPPORTED_VMCS_COMPONENT
    mov $(VMCS_CPU_BASED_VM_EXEC_CONTROL | 0x1000), %edx   /* reserved bit 12 */
    vmread %rdx, %rax
    EXPECT_ERROR vmread_reserved_encoding_bit_is_error_12, VMERR_UNSUPPORTED_VMCS_COMPONENT
    mov $(VMCS_CPU_BASED_VM_EXEC_CONTROL + 1), %edx       /* high access of a 32-bit field */
    vmread %rdx, %rax
    EXPECT_ERROR vmread_high_access_of_32bit_field_is_error_12, VMERR_UNSUPPORTED_VMCS_COMPONENT
    mov $((1 << 32) | VMCS_GUEST_RIP), %rdx                /* bits 63:32 of the register */
    vmread %rdx, %rax
    EXPECT_ERROR vmread_encoding_bits_63_32_is_error_12, VMERR_UNSUPPORTED_VMCS_COMPONENT
    mov $0x6C18, %edx
    vmwrite %rax, %rdx
    EXPECT_ERROR vmwrite_unknown_field_is_error_12, VMERR_UNSUPPORTED_VMCS_COMPONENT
    mov $VMCS_VM_EXIT_REASON, %edx
    vmwrite %rax, %rdx
    EXPECT_ERROR vmwrite_exit_reason_is_error_13, VMERR_VMWRITE_READ_ONLY_COMPONENT
    mov $VMCS_VM_INSTRUCTION_ERROR, %edx
    vmwrite %rax, %rdx
    EXPECT_ERROR vmwrite_instruction_error_field_is_error_13, VMERR_VMWRITE_READ_ONLY_COMPONENT
    mov $VMCS_GUEST_PHYSICAL_ADDRESS, %edx
    vmwrite %rax, %rdx
    EXPECT_ERROR vmwrite_guest_physical_address_is_error_13, VMERR_VMWRITE_READ_ONLY_COMPONENT
    OPERAND VMXON_HPA
    vmxon operand(%rip)
    EXPECT_ERROR vmxon_in_root_is_error_15, VMERR_VMXON_IN_ROOT

/* INVEPT: the type against EPT_VPID_CAP, then the descriptor's EPTP (type 1). */
    xor %eax, %eax
    lea good_eptp_descriptor(%rip), %rcx
    invept (%rcx), %rax
    EXPECT_ERROR invept_type_0_is_error_28, VMERR_INVALID_INVEPT_INVVPID_OPERAND
    mov $3, %eax
    invept (%rcx), %rax
    EXPECT_ERROR invept_type_3_is_error_28, VMERR_INVALID_INVEPT_INVVPID_OPERAND
    mov $1, %eax
    lea bad_type_descriptor(%rip), %rcx
    invept (%rcx), %rax
    EXPECT_ERROR invept_single_bad_eptp_is_error_28, VMERR_INVALID_INVEPT_INVVPID_OPERAND
    mov $1, %eax
    lea good_eptp_descriptor(%rip), %rcx
    invept (%rcx), %rax
    EXPECT_FLAGS invept_single_context_succeeds, 0
    mov $2, %eax
    invept (%rcx), %rax
    EXPECT_FLAGS invept_global_succeeds, 0

/* INVVPID: type, descriptor bits 63:16, VPID 0 (only type 2), canonical address (type 0). */
    mov $4, %eax
    lea vpid1_descriptor(%rip), %rcx
    invvpid (%rcx), %rax
    EXPECT_ERROR invvpid_type_4_is_error_28, VMERR_INVALID_INVEPT_INVVPID_OPERAND
    mov $1, %eax
    lea vpid_reserved_descriptor(%rip), %rcx
    invvpid (%rcx), %rax
    EXPECT_ERROR invvpid_descriptor_bits_63_16_is_error_28, VMERR_INVALID_INVEPT_INVVPID_OPERAND
    mov $1, %eax
    lea vpid0_descriptor(%rip), %rcx
    invvpid (%rcx), %rax
    EXPECT_ERROR invvpid_single_context_vpid_0_is_error_28, VMERR_INVALID_INVEPT_INVVPID_OPERAND
    xor %eax, %eax
    lea vpid1_noncanonical_descriptor(%rip), %rcx
    invvpid (%rcx), %rax
    EXPECT_ERROR invvpid_noncanonical_address_is_error_28, VMERR_INVALID_INVEPT_INVVPID_OPERAND
    xor %eax, %eax
    lea vpid1_descriptor(%rip), %rcx
    invvpid (%rcx), %rax
    EXPECT_FLAGS invvpid_individual_address_succeeds, 0
    mov $3, %eax
    invvpid (%rcx), %rax
    EXPECT_FLAGS invvpid_single_context_retaining_globals_succeeds, 0

/* MUST (K-t try_invvpid): a successful instruction leaves the error field alone. */
    mov $0x6C18, %edx
    vmread %rdx, %rax               /* error field := 12 */
    mov $2, %eax
    lea vpid0_descriptor(%rip), %rcx
    invvpid (%rcx), %rax            /* all-context accepts VPID 0 */
    EXPECT_FLAGS invvpid_all_context_vpid_0_succeeds, 0
    READ VMCS_VM_INSTRUCTION_ERROR
    EXPECT_RAX successful_instruction_keeps_error_field, VMERR_UNSUPPORTED_VMCS_COMPONENT

/* MUST (K-c test_vmcs_high): the high access of a 64-bit field is its bits 63:32. */
    WRITE VMCS_TSC_OFFSET, 0x0123456789ABCDEF
    READ VMCS_TSC_OFFSET + 1
    EXPECT_RAX vmread_high_access_reads_bits_63_32, 0x01234567
    WRITE VMCS_TSC_OFFSET + 1, 0x76543210
    READ VMCS_TSC_OFFSET
    EXPECT_RAX vmwrite_high_access_keeps_bits_31_0, 0x7654321089ABCDEF
    WRITE VMCS_VIRTUAL_PROCESSOR_ID, 0x12345
    READ VMCS_VIRTUAL_PROCESSOR_ID
    EXPECT_RAX vmwrite_truncates_to_the_field_width, 0x2345

/* MUST (K-c test_vmcs_lifecycle): two active VMCSs keep their own values. */
    WRITE VMCS_GUEST_RSP, 0xAAAA
    OPERAND VMCS_B
    vmclear operand(%rip)
    vmptrld operand(%rip)
    EXPECT_FLAGS vmptrld_second_vmcs_succeeds, 0
    WRITE VMCS_GUEST_RSP, 0xBBBB
    OPERAND VMCS_A
    vmptrld operand(%rip)
    READ VMCS_GUEST_RSP
    EXPECT_RAX switching_back_keeps_first_vmcs_values, 0xAAAA
    OPERAND VMCS_B
    vmptrld operand(%rip)
    READ VMCS_GUEST_RSP
    EXPECT_RAX switching_again_keeps_second_vmcs_values, 0xBBBB
    vmptrld operand(%rip)
    READ VMCS_GUEST_RSP
    EXPECT_RAX vmptrld_of_current_vmcs_keeps_values, 0xBBBB

/* MUST (K-c test_vmclear_flushing): after VMCLEAR, a copy of the region reads the same. */
    OPERAND VMCS_A
    vmptrld operand(%rip)
    WRITE VMCS_GUEST_RIP, 0x1234
    vmclear operand(%rip)
    EXPECT_FLAGS vmclear_of_current_vmcs_succeeds, 0
    movq $0, operand(%rip)
    vmptrst operand(%rip)
    mov operand(%rip), %rax
    EXPECT_RAX vmclear_of_current_vmcs_clears_pointer, -1
    mov $VMCS_A, %rsi
    mov $VMCS_COPY, %rdi
    call copy_page
    OPERAND VMCS_COPY
    vmptrld operand(%rip)
    EXPECT_FLAGS vmptrld_of_copied_region_succeeds, 0
    READ VMCS_GUEST_RIP
    EXPECT_RAX vmclear_flushes_fields_to_memory, 0x1234

/* VMXOFF, then VMXON again. */
    vmxoff
    EXPECT_FLAGS vmxoff_succeeds, 0
    OPERAND VMXON_HPA
    vmxon operand(%rip)
    EXPECT_FLAGS vmxon_after_vmxoff_succeeds, 0
    vmxoff
    jmp finish

    CONF_RUNTIME

    .balign 16
good_eptp_descriptor:           .quad SCRATCH | 0x1E, 0     /* WB, 4-level */
bad_type_descriptor:            .quad SCRATCH | 0x19, 0     /* memory type 1 */
vpid1_descriptor:               .quad 1, 0x1000
vpid0_descriptor:               .quad 0, 0x1000
vpid_reserved_descriptor:       .quad 0x10001, 0
vpid1_noncanonical_descriptor:  .quad 1, 0x0000800000000000
