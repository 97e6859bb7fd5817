/* VMX conformance, fault case ud_vmfunc_in_root.
 * #UD: VMFUNC outside non-root operation.
 * Root operation has no IDT, so the fault ends the run: `vtx run --json` must report
 * {"kind": "fault", "vector": 6} at `fault_here` (examples/conformance/cases.py). */
    .include "../../hypervisor/vmx_consts.inc"
.set VMXON_REGION, 0x180000

    .text
    .globl _start
_start:
    mov %cr4, %rax                  /* CR4.VMXE = 1 */
    or $CR4_VMXE, %rax
    mov %rax, %cr4
    mov $IA32_VMX_BASIC, %ecx       /* VMXON region: the revision identifier */
    rdmsr
    and $0x7FFFFFFF, %eax
    mov %eax, VMXON_REGION
    vmxon operand(%rip)             /* root operation */
    jbe not_reached
    mov $VMCS_GUEST_RIP, %edx       /* a field encoding (the VMREAD/VMWRITE cases use it) */
    xor %eax, %eax
    xor %ecx, %ecx
fault_here:
    vmfunc
not_reached:
    mov $0xEE, %eax                 /* no fault: exit code 0xEE */
    out %eax, $EXIT_PORT
    hlt

    .balign 16
operand:    .quad VMXON_REGION, 0
