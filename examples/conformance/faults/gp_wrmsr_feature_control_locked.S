/* VMX conformance, fault case gp_wrmsr_feature_control_locked.
 * #GP(0): WRMSR to IA32_FEATURE_CONTROL, locked out of reset (K-c test_vmx_feature_control).
 * Root operation has no IDT, so the fault ends the run: `vtx run --json` must report
 * {"kind": "fault", "vector": 13} at `fault_here` (examples/conformance/cases.py). */
    .include "../../hypervisor/vmx_consts.inc"
.set VMXON_REGION, 0x180000

    .text
    .globl _start
_start:
    mov $VMCS_GUEST_RIP, %edx       /* a field encoding (the VMREAD/VMWRITE cases use it) */
    mov $IA32_FEATURE_CONTROL, %ecx
    mov $FEATURE_CONTROL_LOCK, %eax
    xor %edx, %edx
fault_here:
    wrmsr
not_reached:
    mov $0xEE, %eax                 /* no fault: exit code 0xEE */
    out %eax, $EXIT_PORT
    hlt

    .balign 16
operand:    .quad VMXON_REGION, 0
