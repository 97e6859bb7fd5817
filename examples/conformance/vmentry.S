/*
 * VMX conformance: VM entry and VM exits.
 *
 * A valid VMCS (a 64-bit guest sharing the host's identity-mapped page tables, like
 * tb/model/vmx.py example_vmcs_fields()) is rebuilt before each case; the case breaks one rule
 * and enters with `launch` / `resume`, which come back either because the instruction failed
 * (flags and VM-instruction error, as software sees them) or through a VM exit / VM-entry
 * failure at HOST_RIP with HOST_RSP = the stack of the call, so a plain RET returns to the case.
 *
 * Covered: launch-state errors 4, 5, 6; control-field checks (error 7, with the flags exactly
 * ZF: K-c enter_guest_with_bad_controls; the EPTP rows of K-t test_ept_eptp, VPID 0 of
 * K-t test_vpid); host-state checks (error 8; controls are checked first); guest-state checks
 * (exit reason 0x80000021 read back with VMREAD 0x4402, qualification 0, or 4 for the VMCS link
 * pointer; the launch state stays clear); successful entries and the exits of a few guest
 * instructions; the EPT-violation exit qualifications kvm-unit-tests expects on real hardware
 * (reference 5.5) and EPT misconfigurations; VMFUNC EPTP switching and its exit 59; the
 * preemption timer at 0. Error 26 (MOV-SS blocking) cannot be provoked: the core has no MOV SS.
 *
 * Prints "PASS name" / "FAIL name: ..." per case; the exit code is the number of failures.
 */
    .include "conf.inc"

.set EPT_PML4,   SCRATCH                 /* EPT: GPA 0 .. 1 GiB identity (one 1 GiB page) */
.set EPT_PDPT,   SCRATCH + 0x1000        /* PDPT[1] (GPA 1 .. 2 GiB) is set per case */
.set EPTP_LIST,  SCRATCH + 0x2000
.set IO_BITMAPS, SCRATCH + 0x3000        /* A and B: two zero pages */
.set EPTP_GOOD,  EPT_PML4 | EPTP_MEMTYPE_WB | (3 << EPTP_WALK_SHIFT)
.set GPA_1G,     0x40000000
.set EPT_1G_WB,  EPT_PS | (6 << EPT_MEMTYPE_SHIFT)
.set HOST_TR_BASE_VALUE, 0x3000

/* After `call launch` / `call resume`: */
/* the instruction failed with VMfailValid(error), flags exactly ZF */
.macro EXPECT_ENTRY_ERROR name, error
    mov $\error, %edx
    NAME \name
    call check_entry_error
    RESET_ERROR_FIELD \error
.endm
/* a VM exit (or VM-entry failure) came back with this exit reason */
.macro EXPECT_EXIT name, reason
    mov $\reason, %edx
    NAME \name
    call check_exit
.endm
/* rax := field, then compare */
.macro EXPECT_FIELD name, field, value
    READ \field
    EXPECT_RAX \name, \value
.endm
/* One control-check case: break a field, VMLAUNCH, expect VMfailValid(7). */
.macro BAD_CONTROL name, field, value
    call valid_vmcs
    WRITE \field, \value
    call launch
    EXPECT_ENTRY_ERROR \name, VMERR_ENTRY_INVALID_CONTROL_FIELD
.endm
.macro BAD_HOST name, field, value
    call valid_vmcs
    WRITE \field, \value
    call launch
    EXPECT_ENTRY_ERROR \name, VMERR_ENTRY_INVALID_HOST_STATE
.endm
/* One guest-state case: VM-entry failure, exit reason 0x80000021. */
.macro BAD_GUEST name, field, value
    call valid_vmcs
    WRITE \field, \value
    call launch
    EXPECT_EXIT \name, EXIT_REASON_INVALID_GUEST_STATE
.endm
/* EPT: set PDPT[1] (GPA 1 GiB .. 2 GiB) and flush cached EPT translations. */
.macro EPT_PDPT1 value
    mov $\value, %rax
    mov %rax, EPT_PDPT + 8
    mov $2, %eax
    lea eptp_descriptor(%rip), %rcx
    invept (%rcx), %rax
    jbe setup_failed
.endm
/* Valid VMCS with EPT (and VPID 1), the guest starting at `entry`. */
.macro EPT_GUEST entry
    call valid_vmcs
    WRITE VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_ACTIVATE_SECONDARY
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_VPID
    WRITE VMCS_VIRTUAL_PROCESSOR_ID, 1
    WRITE VMCS_EPT_POINTER, EPTP_GOOD
    lea \entry(%rip), %rax
    mov $VMCS_GUEST_RIP, %r11d
    vmwrite %rax, %r11
.endm
/* Valid VMCS, guest starting at `entry`. */
.macro GUEST_AT entry
    call valid_vmcs
    lea \entry(%rip), %rax
    mov $VMCS_GUEST_RIP, %r11d
    vmwrite %rax, %r11
.endm

    .text
    .globl _start
_start:
    mov %cr4, %rax
    or $CR4_VMXE, %rax
    mov %rax, %cr4
    mov $VMXON_HPA, %rdi
    xor %edx, %edx
    call init_region
    mov $BAD_REV, %rdi
    xor %edx, %edx
    call init_region
    xorl $0x5A5A, BAD_REV
    mov $VMCS_B, %rdi               /* a good region for the VMCS link pointer checks */
    xor %edx, %edx
    call init_region
    mov $VMCS_A, %rdi
    xor %edx, %edx
    call init_region
    OPERAND VMXON_HPA
    vmxon operand(%rip)
    jbe setup_failed
    /* EPT: PML4[0] -> PDPT; PDPT[0] = 1 GiB identity page, WB, RWX; PDPT[1] per case. */
    mov $EPT_PML4, %rdi
    call zero_page
    mov $EPT_PDPT, %rdi
    call zero_page
    mov $(EPT_PDPT | EPT_RWX), %eax
    mov %rax, EPT_PML4
    mov $(EPT_1G_WB | EPT_RWX), %eax
    mov %rax, EPT_PDPT
    mov $EPTP_LIST, %rdi
    call zero_page
    mov $EPTP_GOOD, %eax
    mov %rax, EPTP_LIST
    mov $(EPTP_GOOD | EPTP_AD), %eax
    mov %rax, EPTP_LIST + 8
    mov $IO_BITMAPS, %rdi
    call zero_page
    mov $(IO_BITMAPS + 0x1000), %rdi
    call zero_page

/* --- successful entries, launch state ------------------------------------------------------- */
    call valid_vmcs
    call launch
    EXPECT_EXIT vmlaunch_valid_vmcs_enters_and_vmcall_exits_18, EXIT_VMCALL
    EXPECT_FIELD vmcall_exit_instruction_length_is_3, VMCS_VM_EXIT_INSTRUCTION_LEN, 3
    lea guest_vmcall(%rip), %rdx
    READ VMCS_GUEST_RIP
    NAME vm_exit_saves_guest_rip
    call check_value
    call launch
    EXPECT_ENTRY_ERROR vmlaunch_launched_vmcs_is_error_4, VMERR_VMLAUNCH_NONCLEAR_VMCS
    call resume
    EXPECT_EXIT vmresume_launched_vmcs_enters, EXIT_VMCALL
    OPERAND VMCS_A
    vmclear operand(%rip)
    vmptrld operand(%rip)
    call resume
    EXPECT_ENTRY_ERROR vmresume_cleared_vmcs_is_error_5, VMERR_VMRESUME_NONLAUNCHED_VMCS
    call launch
    EXPECT_EXIT vmlaunch_after_vmclear_enters, EXIT_VMCALL
    vmxoff
    OPERAND VMXON_HPA
    vmxon operand(%rip)
    OPERAND VMCS_A
    vmptrld operand(%rip)
    call resume
    EXPECT_ENTRY_ERROR vmresume_after_vmxoff_is_error_6, VMERR_VMRESUME_AFTER_VMXOFF

/* --- control fields: error 7 ------------------------------------------------------------------ */
    BAD_CONTROL pin_default1_clear_is_error_7, VMCS_PIN_BASED_VM_EXEC_CONTROL, 0
    BAD_CONTROL pin_posted_interrupts_is_error_7, VMCS_PIN_BASED_VM_EXEC_CONTROL, PIN_DEFAULT1 | PIN_POSTED_INTERRUPTS
    BAD_CONTROL pin_virtual_nmis_without_nmi_exiting_is_error_7, VMCS_PIN_BASED_VM_EXEC_CONTROL, PIN_DEFAULT1 | PIN_VIRTUAL_NMIS
    BAD_CONTROL proc_default1_clear_is_error_7, VMCS_CPU_BASED_VM_EXEC_CONTROL, 0
    BAD_CONTROL proc_tpr_shadow_is_error_7, VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_USE_TPR_SHADOW
    BAD_CONTROL proc_nmi_window_without_virtual_nmis_is_error_7, VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_NMI_WINDOW_EXITING
    BAD_CONTROL exit_ctl_default1_clear_is_error_7, VMCS_VM_EXIT_CONTROLS, EXIT_CTL_HOST_ADDRESS_SPACE_SIZE
    BAD_CONTROL exit_ctl_load_perf_global_ctrl_is_error_7, VMCS_VM_EXIT_CONTROLS, EXIT_CTL_TRUE_DEFAULT1 | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE | EXIT_CTL_LOAD_PERF_GLOBAL_CTRL
    BAD_CONTROL save_preemption_timer_without_timer_is_error_7, VMCS_VM_EXIT_CONTROLS, EXIT_CTL_TRUE_DEFAULT1 | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE | EXIT_CTL_SAVE_PREEMPTION_TIMER
    BAD_CONTROL entry_ctl_entry_to_smm_is_error_7, VMCS_VM_ENTRY_CONTROLS, ENTRY_CTL_TRUE_DEFAULT1 | ENTRY_CTL_IA32E_MODE_GUEST | ENTRY_CTL_ENTRY_TO_SMM
    BAD_CONTROL cr3_target_count_5_is_error_7, VMCS_CR3_TARGET_COUNT, 5
    BAD_CONTROL vm_entry_msr_load_count_is_error_7, VMCS_VM_ENTRY_MSR_LOAD_COUNT, 1
    BAD_CONTROL vm_exit_msr_store_count_is_error_7, VMCS_VM_EXIT_MSR_STORE_COUNT, 1
    BAD_CONTROL inject_reserved_type_is_error_7, VMCS_VM_ENTRY_INTR_INFO_FIELD, INTR_INFO_VALID | (1 << 8)
    BAD_CONTROL inject_nmi_vector_3_is_error_7, VMCS_VM_ENTRY_INTR_INFO_FIELD, INTR_INFO_VALID | (2 << 8) | 3
    BAD_CONTROL inject_gp_without_error_code_is_error_7, VMCS_VM_ENTRY_INTR_INFO_FIELD, INTR_INFO_VALID | (3 << 8) | 13
    BAD_CONTROL inject_reserved_bits_is_error_7, VMCS_VM_ENTRY_INTR_INFO_FIELD, INTR_INFO_VALID | (1 << 20)

    call valid_vmcs
    WRITE VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_USE_IO_BITMAPS
    WRITE VMCS_IO_BITMAP_A, IO_BITMAPS + 8
    WRITE VMCS_IO_BITMAP_B, IO_BITMAPS + 0x1000
    call launch
    EXPECT_ENTRY_ERROR io_bitmap_misaligned_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    call valid_vmcs
    WRITE VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_USE_MSR_BITMAPS
    WRITE VMCS_MSR_BITMAP, 1 << 40
    call launch
    EXPECT_ENTRY_ERROR msr_bitmap_beyond_maxphyaddr_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD

    /* Secondary controls (only checked with "activate secondary controls"). */
    EPT_GUEST guest_vmcall
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_PML
    call launch
    EXPECT_ENTRY_ERROR secondary_pml_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_EPT_POINTER, EPT_PML4 | (3 << EPTP_WALK_SHIFT) | 1
    call launch
    EXPECT_ENTRY_ERROR eptp_memory_type_1_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_EPT_POINTER, EPT_PML4 | (4 << EPTP_WALK_SHIFT) | 6
    call launch
    EXPECT_ENTRY_ERROR eptp_5_level_walk_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_EPT_POINTER, EPTP_GOOD | (1 << 7)
    call launch
    EXPECT_ENTRY_ERROR eptp_bit_7_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_EPT_POINTER, EPTP_GOOD | (1 << 40)
    call launch
    EXPECT_ENTRY_ERROR eptp_beyond_maxphyaddr_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_VIRTUAL_PROCESSOR_ID, 0
    call launch
    EXPECT_ENTRY_ERROR enable_vpid_with_vpid_0_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_UNRESTRICTED_GUEST
    call launch
    EXPECT_ENTRY_ERROR unrestricted_guest_without_ept_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_VM_FUNCTIONS
    WRITE VMCS_VM_FUNCTION_CONTROL, 2
    WRITE VMCS_EPTP_LIST_ADDRESS, EPTP_LIST
    call launch
    EXPECT_ENTRY_ERROR vm_function_control_reserved_bit_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_VM_FUNCTIONS
    WRITE VMCS_VM_FUNCTION_CONTROL, VMFUNC_EPTP_SWITCHING
    WRITE VMCS_EPTP_LIST_ADDRESS, EPTP_LIST
    call launch
    EXPECT_ENTRY_ERROR eptp_switching_without_ept_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    EPT_GUEST guest_vmcall
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_VM_FUNCTIONS
    WRITE VMCS_VM_FUNCTION_CONTROL, VMFUNC_EPTP_SWITCHING
    WRITE VMCS_EPTP_LIST_ADDRESS, EPTP_LIST + 8
    call launch
    EXPECT_ENTRY_ERROR eptp_list_misaligned_is_error_7, VMERR_ENTRY_INVALID_CONTROL_FIELD
    /* A secondary control that is not allowed, but "activate secondary controls" is 0. */
    call valid_vmcs
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_PML
    call launch
    EXPECT_EXIT secondary_controls_ignored_when_not_activated, EXIT_VMCALL

/* --- host state: error 8; controls are checked first ----------------------------------------- */
    BAD_HOST host_cr0_without_pg_is_error_8, VMCS_HOST_CR0, CR0_PE | CR0_NE
    BAD_HOST host_cr4_without_vmxe_is_error_8, VMCS_HOST_CR4, CR4_PAE
    BAD_HOST host_cr4_without_pae_is_error_8, VMCS_HOST_CR4, CR4_VMXE
    BAD_HOST host_cr3_beyond_maxphyaddr_is_error_8, VMCS_HOST_CR3, 1 << 40
    BAD_HOST host_cs_rpl_is_error_8, VMCS_HOST_CS_SELECTOR, 0x0B
    BAD_HOST host_tr_ti_is_error_8, VMCS_HOST_TR_SELECTOR, 0x1C
    BAD_HOST host_cs_null_is_error_8, VMCS_HOST_CS_SELECTOR, 0
    BAD_HOST host_tr_null_is_error_8, VMCS_HOST_TR_SELECTOR, 0
    BAD_HOST host_gdtr_base_noncanonical_is_error_8, VMCS_HOST_GDTR_BASE, 0x0000800000000000
    BAD_HOST host_sysenter_esp_noncanonical_is_error_8, VMCS_HOST_IA32_SYSENTER_ESP, 0x0000800000000000
    BAD_HOST host_address_space_size_0_in_ia32e_mode_is_error_8, VMCS_VM_EXIT_CONTROLS, EXIT_CTL_TRUE_DEFAULT1
    call valid_vmcs
    WRITE VMCS_VM_EXIT_CONTROLS, EXIT_CTL_TRUE_DEFAULT1 | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE | EXIT_CTL_LOAD_EFER
    WRITE VMCS_HOST_IA32_EFER, 0
    call launch
    EXPECT_ENTRY_ERROR host_efer_lma_differs_from_address_space_size_is_error_8, VMERR_ENTRY_INVALID_HOST_STATE
    call valid_vmcs
    WRITE VMCS_VM_EXIT_CONTROLS, EXIT_CTL_TRUE_DEFAULT1 | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE | EXIT_CTL_LOAD_PAT
    WRITE VMCS_HOST_IA32_PAT, 2
    call launch
    EXPECT_ENTRY_ERROR host_pat_reserved_type_is_error_8, VMERR_ENTRY_INVALID_HOST_STATE
    call valid_vmcs
    WRITE VMCS_HOST_RIP, 0x0000800000000000
    call launch_keep_host_rip
    EXPECT_ENTRY_ERROR host_rip_noncanonical_is_error_8, VMERR_ENTRY_INVALID_HOST_STATE
    call valid_vmcs
    WRITE VMCS_PIN_BASED_VM_EXEC_CONTROL, 0
    WRITE VMCS_HOST_CR4, CR4_PAE
    call launch
    EXPECT_ENTRY_ERROR controls_checked_before_host_state, VMERR_ENTRY_INVALID_CONTROL_FIELD

/* --- guest state: VM-entry failure, exit reason 0x80000021 ----------------------------------- */
    call valid_vmcs
    READ VMCS_GUEST_CR0
    and $~CR0_NE, %rax
    mov $VMCS_GUEST_CR0, %r11d
    vmwrite %rax, %r11
    call launch
    EXPECT_EXIT guest_cr0_without_ne_is_entry_failure, EXIT_REASON_INVALID_GUEST_STATE
    EXPECT_FIELD entry_failure_qualification_is_0, VMCS_EXIT_QUALIFICATION, ENTRY_FAIL_DEFAULT
    READ VMCS_GUEST_CR0
    or $CR0_NE, %rax
    mov $VMCS_GUEST_CR0, %r11d
    vmwrite %rax, %r11
    call launch
    EXPECT_EXIT entry_failure_leaves_launch_state_clear, EXIT_VMCALL

    BAD_GUEST guest_cr4_without_vmxe_is_entry_failure, VMCS_GUEST_CR4, CR4_PAE
    BAD_GUEST ia32e_guest_without_pae_is_entry_failure, VMCS_GUEST_CR4, CR4_VMXE
    BAD_GUEST guest_cr3_beyond_maxphyaddr_is_entry_failure, VMCS_GUEST_CR3, 1 << 40
    BAD_GUEST guest_rflags_bit_1_clear_is_entry_failure, VMCS_GUEST_RFLAGS, 0
    BAD_GUEST guest_rflags_reserved_bit_3_is_entry_failure, VMCS_GUEST_RFLAGS, RFLAGS_FIXED1 | 8
    BAD_GUEST guest_rflags_vm_in_ia32e_is_entry_failure, VMCS_GUEST_RFLAGS, RFLAGS_FIXED1 | RFLAGS_VM
    BAD_GUEST guest_rip_noncanonical_is_entry_failure, VMCS_GUEST_RIP, 0x0000800000000000
    BAD_GUEST guest_cs_data_segment_is_entry_failure, VMCS_GUEST_CS_AR_BYTES, 0xA093
    BAD_GUEST guest_cs_l_and_db_is_entry_failure, VMCS_GUEST_CS_AR_BYTES, 0xE09B
    BAD_GUEST guest_ss_rpl_differs_from_cs_is_entry_failure, VMCS_GUEST_SS_SELECTOR, 0x13
    BAD_GUEST guest_ds_not_present_is_entry_failure, VMCS_GUEST_DS_AR_BYTES, 0xC013
    BAD_GUEST guest_tr_unusable_is_entry_failure, VMCS_GUEST_TR_AR_BYTES, 0x1008B
    BAD_GUEST guest_tr_16bit_tss_is_entry_failure, VMCS_GUEST_TR_AR_BYTES, 0x83
    BAD_GUEST guest_ldtr_usable_bad_type_is_entry_failure, VMCS_GUEST_LDTR_AR_BYTES, 0x83
    BAD_GUEST guest_gdtr_limit_above_16_bits_is_entry_failure, VMCS_GUEST_GDTR_LIMIT, 0x10000
    BAD_GUEST guest_idtr_base_noncanonical_is_entry_failure, VMCS_GUEST_IDTR_BASE, 0x0000800000000000
    BAD_GUEST guest_sysenter_eip_noncanonical_is_entry_failure, VMCS_GUEST_SYSENTER_EIP, 0x0000800000000000
    BAD_GUEST guest_activity_shutdown_is_entry_failure, VMCS_GUEST_ACTIVITY_STATE, 2
    BAD_GUEST guest_interruptibility_reserved_is_entry_failure, VMCS_GUEST_INTERRUPTIBILITY_INFO, 0x10
    BAD_GUEST guest_sti_and_mov_ss_blocking_is_entry_failure, VMCS_GUEST_INTERRUPTIBILITY_INFO, 3
    BAD_GUEST guest_smi_blocking_is_entry_failure, VMCS_GUEST_INTERRUPTIBILITY_INFO, 4
    BAD_GUEST guest_pending_debug_reserved_is_entry_failure, VMCS_GUEST_PENDING_DBG_EXCEPTIONS, 0x10
    call valid_vmcs
    WRITE VMCS_VM_ENTRY_CONTROLS, ENTRY_CTL_TRUE_DEFAULT1 | ENTRY_CTL_IA32E_MODE_GUEST | ENTRY_CTL_LOAD_EFER
    WRITE VMCS_GUEST_IA32_EFER, EFER_LME
    call launch
    EXPECT_EXIT guest_efer_lma_differs_from_ia32e_guest_is_entry_failure, EXIT_REASON_INVALID_GUEST_STATE
    call valid_vmcs
    WRITE VMCS_VM_ENTRY_CONTROLS, ENTRY_CTL_TRUE_DEFAULT1 | ENTRY_CTL_IA32E_MODE_GUEST | ENTRY_CTL_LOAD_PAT
    WRITE VMCS_GUEST_IA32_PAT, 3
    call launch
    EXPECT_EXIT guest_pat_reserved_type_is_entry_failure, EXIT_REASON_INVALID_GUEST_STATE
    BAD_GUEST vmcs_link_pointer_misaligned_is_entry_failure, VMCS_VMCS_LINK_POINTER, VMCS_B + 8
    EXPECT_FIELD vmcs_link_pointer_failure_qualification_is_4, VMCS_EXIT_QUALIFICATION, ENTRY_FAIL_VMCS_LINK_POINTER
    BAD_GUEST vmcs_link_pointer_bad_revision_is_entry_failure, VMCS_VMCS_LINK_POINTER, BAD_REV
    EXPECT_FIELD vmcs_link_pointer_bad_revision_qualification_is_4, VMCS_EXIT_QUALIFICATION, ENTRY_FAIL_VMCS_LINK_POINTER
    /* SDM 26.3.1.5: outside SMM the link pointer must not contain the current-VMCS pointer. */
    BAD_GUEST vmcs_link_pointer_is_the_current_vmcs_is_entry_failure, VMCS_VMCS_LINK_POINTER, VMCS_A
    EXPECT_FIELD vmcs_link_pointer_current_qualification_is_4, VMCS_EXIT_QUALIFICATION, ENTRY_FAIL_VMCS_LINK_POINTER
    call valid_vmcs
    WRITE VMCS_VMCS_LINK_POINTER, VMCS_B
    call launch
    EXPECT_EXIT vmcs_link_pointer_to_valid_region_enters, EXIT_VMCALL

/* --- exits of guest instructions ------------------------------------------------------------- */
    GUEST_AT guest_cpuid
    call launch
    EXPECT_EXIT guest_cpuid_exits_10, EXIT_CPUID
    GUEST_AT guest_hlt
    WRITE VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_HLT_EXITING
    call launch
    EXPECT_EXIT guest_hlt_with_hlt_exiting_exits_12, EXIT_HLT
    GUEST_AT guest_out_imm
    WRITE VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_UNCONDITIONAL_IO_EXITING
    call launch
    EXPECT_EXIT guest_out_exits_30, EXIT_IO_INSTRUCTION
    EXPECT_FIELD guest_out_imm8_qualification, VMCS_EXIT_QUALIFICATION, (0x80 << 16) | (1 << 6)
    EXPECT_FIELD guest_out_instruction_length_is_2, VMCS_VM_EXIT_INSTRUCTION_LEN, 2
    GUEST_AT guest_in_dx
    WRITE VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_USE_IO_BITMAPS
    WRITE VMCS_IO_BITMAP_A, IO_BITMAPS
    WRITE VMCS_IO_BITMAP_B, IO_BITMAPS + 0x1000
    mov $(1 << (0x3F8 & 63)), %rax  /* the bit of port 0x3F8 in I/O bitmap A */
    or %rax, IO_BITMAPS + (0x3F8 >> 6) * 8
    call launch
    EXPECT_EXIT guest_in_dx_with_io_bitmap_bit_exits_30, EXIT_IO_INSTRUCTION
    EXPECT_FIELD guest_in_dx_32bit_qualification, VMCS_EXIT_QUALIFICATION, (0x3F8 << 16) | (1 << 3) | 3
    movq $0, IO_BITMAPS + (0x3F8 >> 6) * 8
    GUEST_AT guest_rdmsr
    call launch
    EXPECT_EXIT guest_rdmsr_without_msr_bitmaps_exits_31, EXIT_RDMSR
    GUEST_AT guest_vmread
    call launch
    EXPECT_EXIT guest_vmread_exits_23, EXIT_VMREAD
    GUEST_AT guest_mov_to_cr3
    WRITE VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1 | PROC_CR3_LOAD_EXITING
    call launch
    EXPECT_EXIT guest_mov_to_cr3_with_cr3_load_exiting_exits_28, EXIT_CR_ACCESS
    EXPECT_FIELD guest_mov_to_cr3_qualification, VMCS_EXIT_QUALIFICATION, 3 | (3 << 8)   /* CR3, MOV to CR, RBX */
    GUEST_AT guest_ud
    WRITE VMCS_EXCEPTION_BITMAP, 1 << 6
    call launch
    EXPECT_EXIT guest_ud_with_exception_bitmap_exits_0, EXIT_EXCEPTION_NMI
    EXPECT_FIELD guest_ud_exit_interruption_info, VMCS_VM_EXIT_INTR_INFO, INTR_INFO_VALID | (3 << 8) | 6
    GUEST_AT guest_ud
    call launch
    EXPECT_EXIT guest_ud_without_exception_bitmap_is_triple_fault_2, EXIT_TRIPLE_FAULT
    call valid_vmcs
    WRITE VMCS_PIN_BASED_VM_EXEC_CONTROL, PIN_DEFAULT1 | PIN_PREEMPTION_TIMER
    WRITE VMCS_VMX_PREEMPTION_TIMER_VALUE, 0
    call launch
    EXPECT_EXIT preemption_timer_0_exits_52_at_once, EXIT_PREEMPTION_TIMER
    lea guest_vmcall(%rip), %rdx
    READ VMCS_GUEST_RIP
    NAME preemption_timer_exit_before_first_instruction
    call check_value

/* --- EPT ------------------------------------------------------------------------------------- */
    EPT_GUEST guest_vmcall
    call launch
    EXPECT_EXIT vmlaunch_with_ept_and_vpid_enters, EXIT_VMCALL
    /* Reference 5.5 (kvm-unit-tests on real hardware): exit qualifications. */
    EPT_PDPT1 0
    EPT_GUEST guest_read_1g
    call launch
    EXPECT_EXIT ept_not_present_read_exits_48, EXIT_EPT_VIOLATION
    EXPECT_FIELD ept_not_present_read_qualification_0x181, VMCS_EXIT_QUALIFICATION, 0x181
    EXPECT_FIELD ept_violation_guest_physical_address, VMCS_GUEST_PHYSICAL_ADDRESS, GPA_1G + 0x123
    EXPECT_FIELD ept_violation_guest_linear_address, VMCS_GUEST_LINEAR_ADDRESS, GPA_1G + 0x123
    EPT_GUEST guest_write_1g
    call launch
    EXPECT_EXIT ept_not_present_write_exits_48, EXIT_EPT_VIOLATION
    EXPECT_FIELD ept_not_present_write_qualification_0x182, VMCS_EXIT_QUALIFICATION, 0x182
    EPT_GUEST guest_fetch_1g
    call launch
    EXPECT_EXIT ept_not_present_fetch_exits_48, EXIT_EPT_VIOLATION
    EXPECT_FIELD ept_not_present_fetch_qualification_0x184, VMCS_EXIT_QUALIFICATION, 0x184
    EPT_PDPT1 GPA_1G | EPT_1G_WB | EPT_R
    EPT_GUEST guest_write_1g
    call launch
    EXPECT_EXIT ept_read_only_write_exits_48, EXIT_EPT_VIOLATION
    EXPECT_FIELD ept_read_only_write_qualification_0x18a, VMCS_EXIT_QUALIFICATION, 0x18A
    EPT_GUEST guest_fetch_1g
    call launch
    EXPECT_FIELD ept_read_only_fetch_qualification_0x18c, VMCS_EXIT_QUALIFICATION, 0x18C
    EPT_PDPT1 GPA_1G | EPT_1G_WB | EPT_R | EPT_W
    EPT_GUEST guest_fetch_1g
    call launch
    EXPECT_FIELD ept_read_write_fetch_qualification_0x19c, VMCS_EXIT_QUALIFICATION, 0x19C
    EPT_PDPT1 GPA_1G | EPT_1G_WB | EPT_X
    EPT_GUEST guest_read_1g
    call launch
    EXPECT_FIELD ept_execute_only_read_qualification_0x1a1, VMCS_EXIT_QUALIFICATION, 0x1A1
    EPT_PDPT1 0
    EPT_GUEST guest_vmcall
    WRITE VMCS_GUEST_CR3, GPA_1G    /* the guest's PML4 is where EPT maps nothing */
    call launch
    EXPECT_EXIT ept_guest_paging_structure_not_present_exits_48, EXIT_EPT_VIOLATION
    EXPECT_FIELD ept_guest_paging_structure_qualification_0x81, VMCS_EXIT_QUALIFICATION, 0x81
    EXPECT_FIELD ept_guest_paging_structure_gpa, VMCS_GUEST_PHYSICAL_ADDRESS, GPA_1G
    EPT_GUEST guest_vmcall
    WRITE VMCS_EPT_POINTER, EPTP_GOOD | EPTP_AD
    WRITE VMCS_GUEST_CR3, GPA_1G
    call launch
    EXPECT_FIELD ept_ad_guest_paging_structure_qualification_0x83, VMCS_EXIT_QUALIFICATION, 0x83
    EPT_PDPT1 GPA_1G | EPT_1G_WB | EPT_W
    EPT_GUEST guest_read_1g
    call launch
    EXPECT_EXIT ept_write_only_is_misconfiguration_49, EXIT_EPT_MISCONFIG
    EPT_PDPT1 GPA_1G | EPT_1G_WB | EPT_RWX | (1 << 45)
    EPT_GUEST guest_read_1g
    call launch
    EXPECT_EXIT ept_reserved_bit_above_maxphyaddr_is_misconfiguration_49, EXIT_EPT_MISCONFIG
    EPT_PDPT1 GPA_1G | EPT_PS | (2 << EPT_MEMTYPE_SHIFT) | EPT_RWX
    EPT_GUEST guest_read_1g
    call launch
    EXPECT_EXIT ept_leaf_memory_type_2_is_misconfiguration_49, EXIT_EPT_MISCONFIG
    EPT_PDPT1 GPA_1G | EPT_1G_WB | EPT_RWX | 0x1000
    EPT_GUEST guest_read_1g
    call launch
    EXPECT_EXIT ept_1g_leaf_bit_12_is_misconfiguration_49, EXIT_EPT_MISCONFIG
    EPT_PDPT1 0
    orq $8, EPT_PML4                /* PML4E bit 3: reserved */
    EPT_PDPT1 0                     /* (and INVEPT) */
    EPT_GUEST guest_vmcall
    call launch
    EXPECT_EXIT ept_pml4e_reserved_bit_3_is_misconfiguration_49, EXIT_EPT_MISCONFIG
    andq $~8, EPT_PML4
    EPT_PDPT1 0

    /* VMFUNC 0: EPTP switching without an exit; failures exit with 59. */
    EPT_GUEST guest_vmfunc_1
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_VPID | PROC2_ENABLE_VM_FUNCTIONS
    WRITE VMCS_VM_FUNCTION_CONTROL, VMFUNC_EPTP_SWITCHING
    WRITE VMCS_EPTP_LIST_ADDRESS, EPTP_LIST
    call launch
    EXPECT_EXIT vmfunc_eptp_switching_does_not_exit, EXIT_VMCALL
    EXPECT_FIELD vmfunc_loads_eptp_list_entry, VMCS_EPT_POINTER, EPTP_GOOD | EPTP_AD
    EPT_GUEST guest_vmfunc_index_512
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_VPID | PROC2_ENABLE_VM_FUNCTIONS
    WRITE VMCS_VM_FUNCTION_CONTROL, VMFUNC_EPTP_SWITCHING
    WRITE VMCS_EPTP_LIST_ADDRESS, EPTP_LIST
    call launch
    EXPECT_EXIT vmfunc_index_512_exits_59, EXIT_VMFUNC
    EPT_GUEST guest_vmfunc_1
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_VPID | PROC2_ENABLE_VM_FUNCTIONS
    WRITE VMCS_VM_FUNCTION_CONTROL, 0
    WRITE VMCS_EPTP_LIST_ADDRESS, EPTP_LIST
    call launch
    EXPECT_EXIT vmfunc_not_enabled_in_controls_exits_59, EXIT_VMFUNC
    EPT_GUEST guest_vmfunc_2
    WRITE VMCS_SECONDARY_VM_EXEC_CONTROL, PROC2_ENABLE_EPT | PROC2_ENABLE_VPID | PROC2_ENABLE_VM_FUNCTIONS
    WRITE VMCS_VM_FUNCTION_CONTROL, VMFUNC_EPTP_SWITCHING
    WRITE VMCS_EPTP_LIST_ADDRESS, EPTP_LIST
    call launch
    EXPECT_EXIT vmfunc_invalid_list_entry_exits_59, EXIT_VMFUNC

    OPERAND VMCS_A
    vmclear operand(%rip)
    vmxoff
    jmp finish

/* ============================================================================================ */

/* A valid VMCS A, launch state clear: 64-bit host and guest, minimum controls, the guest at
 * guest_vmcall on the host's page tables. Every field a case changes is in valid_fields
 * (tests/test_conformance.py checks it), so no case sees another's changes. */
valid_vmcs:
    OPERAND VMCS_A
    vmclear operand(%rip)           /* launch state := clear */
    jbe setup_failed
    vmptrld operand(%rip)
    jbe setup_failed
    lea valid_fields(%rip), %rsi
1:  mov (%rsi), %r11
    cmp $-1, %r11
    je 2f
    mov 8(%rsi), %r10
    vmwrite %r10, %r11
    jbe setup_failed
    add $16, %rsi
    jmp 1b
2:  mov %cr0, %rax
    mov $VMCS_HOST_CR0, %r11d
    vmwrite %rax, %r11
    mov $VMCS_GUEST_CR0, %r11d
    vmwrite %rax, %r11
    mov %cr3, %rax
    mov $VMCS_HOST_CR3, %r11d
    vmwrite %rax, %r11
    mov $VMCS_GUEST_CR3, %r11d
    vmwrite %rax, %r11
    mov %cr4, %rax
    mov $VMCS_HOST_CR4, %r11d
    vmwrite %rax, %r11
    mov $VMCS_GUEST_CR4, %r11d
    vmwrite %rax, %r11
    lea guest_vmcall(%rip), %rax
    mov $VMCS_GUEST_RIP, %r11d
    vmwrite %rax, %r11
    jbe setup_failed
    ret

/* VMLAUNCH / VMRESUME the current VMCS. rax = 1: a VM exit or VM-entry failure came back (at
 * HOST_RIP with HOST_RSP = this stack); rax = 0: the instruction failed, its arithmetic flags
 * in entry_flags. */
launch:
    xor %edi, %edi
    jmp enter_guest
resume:
    mov $1, %edi
    jmp enter_guest
launch_keep_host_rip:               /* (for the HOST_RIP case: do not overwrite it) */
    mov $2, %edi
enter_guest:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov $VMCS_HOST_RSP, %r11d
    vmwrite %rsp, %r11
    jbe setup_failed
    cmp $2, %edi
    je 1f
    lea 4f(%rip), %rax
    mov $VMCS_HOST_RIP, %r11d
    vmwrite %rax, %r11
    jbe setup_failed
1:  cmp $1, %edi
    je 2f
    vmlaunch
    jmp 3f
2:  vmresume
3:  pushfq
    pop %rax
    and $RFLAGS_ARITH, %eax
    mov %rax, entry_flags(%rip)
    xor %eax, %eax
    jmp 5f
4:  mov $1, %eax                    /* VM exit: RSP = HOST_RSP, RFLAGS = 2 */
5:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* After launch/resume: rax = 0 and VMfailValid(rdx) expected; rsi = name. */
check_entry_error:
    test %rax, %rax
    jz 1f
    push %rdx
    call case_fail_head
    SAY "got a VM exit, reason "
    READ VMCS_VM_EXIT_REASON
    call put_hex
    SAY ", expected VM-instruction error "
    pop %rax
    call put_hex
    jmp newline
1:  mov entry_flags(%rip), %rax
    jmp check_vmfail_valid

/* After launch/resume: rax = 1 and exit reason rdx expected; rsi = name. */
check_exit:
    test %rax, %rax
    jnz 1f
    push %rdx
    call case_fail_head
    SAY "VM entry failed, flags "
    mov entry_flags(%rip), %rax
    call put_hex
    SAY ", VM-instruction error "
    READ VMCS_VM_INSTRUCTION_ERROR
    call put_hex
    SAY ", expected exit reason "
    pop %rax
    call put_hex
    jmp newline
1:  push %rsi
    push %rdx
    READ VMCS_VM_EXIT_REASON
    pop %rdx
    pop %rsi
    jmp check_value

/* --- guests: one instruction under test, then VMCALL ---------------------------------------- */
guest_vmcall:
    vmcall
    jmp guest_vmcall
guest_cpuid:
    xor %eax, %eax
    cpuid
    vmcall
guest_hlt:
    hlt
    vmcall
guest_out_imm:
    out %al, $0x80
    vmcall
guest_in_dx:
    mov $0x3F8, %edx
    in %dx, %eax
    vmcall
guest_rdmsr:
    mov $IA32_VMX_BASIC, %ecx
    rdmsr
    vmcall
guest_vmread:
    mov $VMCS_GUEST_RIP, %edx
    vmread %rdx, %rax
    vmcall
guest_mov_to_cr3:
    mov %cr3, %rbx
    mov %rbx, %cr3
    vmcall
guest_ud:
    .byte 0x0F, 0x0B                /* UD2 */
    vmcall
guest_read_1g:
    mov $(GPA_1G + 0x123), %rbx
    mov (%rbx), %al
    vmcall
guest_write_1g:
    mov $(GPA_1G + 0x123), %rbx
    movb $1, (%rbx)
    vmcall
guest_fetch_1g:
    mov $(GPA_1G + 0x123), %rbx
    jmp *%rbx
guest_vmfunc_1:
    xor %eax, %eax
    mov $1, %ecx
    vmfunc
    vmcall
guest_vmfunc_index_512:
    xor %eax, %eax
    mov $512, %ecx
    vmfunc
    vmcall
guest_vmfunc_2:                     /* EPTP-list entry 2 is 0: not a valid EPTP */
    xor %eax, %eax
    mov $2, %ecx
    vmfunc
    vmcall

    CONF_RUNTIME

    .balign 8
entry_flags:        .quad 0
eptp_descriptor:    .quad EPTP_GOOD, 0

/* The valid VMCS (without CR0/CR3/CR4 and RIPs, written at run time). */
valid_fields:
    .quad VMCS_PIN_BASED_VM_EXEC_CONTROL, PIN_DEFAULT1
    .quad VMCS_CPU_BASED_VM_EXEC_CONTROL, PROC_TRUE_DEFAULT1
    .quad VMCS_VM_EXIT_CONTROLS, EXIT_CTL_TRUE_DEFAULT1 | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE
    .quad VMCS_VM_ENTRY_CONTROLS, ENTRY_CTL_TRUE_DEFAULT1 | ENTRY_CTL_IA32E_MODE_GUEST
    .quad VMCS_HOST_CS_SELECTOR, 0x08
    .quad VMCS_HOST_SS_SELECTOR, 0x10
    .quad VMCS_HOST_DS_SELECTOR, 0x10
    .quad VMCS_HOST_ES_SELECTOR, 0x10
    .quad VMCS_HOST_TR_SELECTOR, 0x18
    .quad VMCS_HOST_TR_BASE, HOST_TR_BASE_VALUE
    .quad VMCS_GUEST_IA32_EFER, EFER_LME | EFER_LMA
    .quad VMCS_GUEST_RSP, GUEST_STACK
    .quad VMCS_GUEST_RFLAGS, RFLAGS_FIXED1
    .quad VMCS_GUEST_CS_SELECTOR, 0x08
    .quad VMCS_GUEST_CS_LIMIT, 0xFFFFFFFF
    .quad VMCS_GUEST_CS_AR_BYTES, 0xA09B
    .irp seg, ES, SS, DS, FS, GS
    .quad VMCS_GUEST_\seg\()_SELECTOR, 0x10
    .quad VMCS_GUEST_\seg\()_LIMIT, 0xFFFFFFFF
    .quad VMCS_GUEST_\seg\()_AR_BYTES, 0xC093
    .endr
    .quad VMCS_GUEST_TR_SELECTOR, 0x18
    .quad VMCS_GUEST_TR_LIMIT, 0x67
    .quad VMCS_GUEST_TR_AR_BYTES, 0x8B
    .quad VMCS_GUEST_LDTR_AR_BYTES, AR_UNUSABLE
    .quad VMCS_GUEST_GDTR_LIMIT, 0xFFFF
    .quad VMCS_VMCS_LINK_POINTER, -1
    /* Fields some case changes, back to their valid values. */
    .quad VMCS_SECONDARY_VM_EXEC_CONTROL, 0
    .quad VMCS_VIRTUAL_PROCESSOR_ID, 0
    .quad VMCS_EPT_POINTER, 0
    .quad VMCS_EPTP_LIST_ADDRESS, 0
    .quad VMCS_VM_FUNCTION_CONTROL, 0
    .quad VMCS_EXCEPTION_BITMAP, 0
    .quad VMCS_CR3_TARGET_COUNT, 0
    .quad VMCS_IO_BITMAP_A, 0
    .quad VMCS_IO_BITMAP_B, 0
    .quad VMCS_MSR_BITMAP, 0
    .quad VMCS_VM_ENTRY_MSR_LOAD_COUNT, 0
    .quad VMCS_VM_EXIT_MSR_STORE_COUNT, 0
    .quad VMCS_VM_ENTRY_INTR_INFO_FIELD, 0
    .quad VMCS_VMX_PREEMPTION_TIMER_VALUE, 0
    .quad VMCS_HOST_GDTR_BASE, 0
    .quad VMCS_HOST_IA32_SYSENTER_ESP, 0
    .quad VMCS_HOST_IA32_EFER, 0
    .quad VMCS_HOST_IA32_PAT, 0
    .quad VMCS_GUEST_IA32_PAT, 0
    .quad VMCS_GUEST_IDTR_BASE, 0
    .quad VMCS_GUEST_SYSENTER_EIP, 0
    .quad VMCS_GUEST_ACTIVITY_STATE, 0
    .quad VMCS_GUEST_INTERRUPTIBILITY_INFO, 0
    .quad VMCS_GUEST_PENDING_DBG_EXCEPTIONS, 0
    .quad -1
