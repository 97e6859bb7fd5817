/* VMX conformance, fault case gp_wrmsr_vmx_capability_msr.
 * #GP(0): WRMSR to a VMX capability MSR (IA32_VMX_BASIC is read-only).
 * Root operation has no IDT, so the fault ends the run: `vtx run --json` must report
 * {"kind": "fault", "vector": 13} at `fault_here` (examples/conformance/cases.py). */
    .include "../../hypervisor/vmx_consts.inc"
.set VMXON_REGION, 0x180000

    .text
    .globl _start
_start:
    mov $VMCS_GUEST_RIP, %edx       /* a field encoding (the VMREAD/VMWRITE cases use it) */
    mov $IA32_VMX_BASIC, %ecx
    xor %eax, %eax
    xor %edx, %edx
fault_here:
    wrmsr
not_reached:
    mov $0xEE, %eax                 /* no fault: exit code 0xEE */
    out %eax, $EXIT_PORT
    hlt

    .balign 16
operand:    .quad VMXON_REGION, 0
