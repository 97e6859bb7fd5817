/* VMX conformance, fault case gp_vmxon_with_cr0_ne_0.
 * #GP(0): VMXON with CR0.NE = 0, outside IA32_VMX_CR0_FIXED0 (K-c test_vmxon_bad_cr).
 * Root operation has no IDT, so the fault ends the run: `vtx run --json` must report
 * {"kind": "fault", "vector": 13} at `fault_here` (examples/conformance/cases.py). */
    .include "../../hypervisor/vmx_consts.inc"
.set VMXON_REGION, 0x180000

    .text
    .globl _start
_start:
    mov %cr4, %rax                  /* CR4.VMXE = 1 */
    or $CR4_VMXE, %rax
    mov %rax, %cr4
    mov %cr0, %rax                  /* CR0.NE = 0 */
    and $~CR0_NE, %rax
    mov %rax, %cr0
    mov $VMCS_GUEST_RIP, %edx       /* a field encoding (the VMREAD/VMWRITE cases use it) */
fault_here:
    vmxon operand(%rip)
not_reached:
    mov $0xEE, %eax                 /* no fault: exit code 0xEE */
    out %eax, $EXIT_PORT
    hlt

    .balign 16
operand:    .quad VMXON_REGION, 0
