/* VMX conformance, fault case pf_vmwrite_unmapped_source.
 * #PF: VMWRITE from a memory source that is not mapped (MUST, K-c test_vmread_vmwrite_pf: the
 * fault comes when the operand is accessed and leaves RFLAGS unchanged). The boot page tables
 * map only the first 4 GiB, so 0x100000000 is not present.
 * Root operation has no IDT, so the fault ends the run: `vtx run --json` must report
 * {"kind": "fault", "vector": 14} at `fault_here`, error code 0, with RFLAGS as before the
 * instruction (ZF and PF set by the XOR) (examples/conformance/cases.py). */
    .include "../../hypervisor/vmx_consts.inc"
.set VMXON_REGION, 0x180000
.set VMCS_REGION,  0x181000

    .text
    .globl _start
_start:
    mov %cr4, %rax                  /* CR4.VMXE = 1 */
    or $CR4_VMXE, %rax
    mov %rax, %cr4
    mov $IA32_VMX_BASIC, %ecx       /* VMXON region and VMCS: the revision identifier */
    rdmsr
    and $0x7FFFFFFF, %eax
    mov %eax, VMXON_REGION
    mov %eax, VMCS_REGION
    vmxon vmxon_ptr(%rip)
    jbe not_reached
    vmclear vmcs_ptr(%rip)
    jbe not_reached
    vmptrld vmcs_ptr(%rip)
    jbe not_reached
    mov $VMCS_GUEST_RIP, %edx
    mov $0x100000000, %rbx          /* not mapped */
    xor %eax, %eax                  /* RFLAGS: ZF = PF = 1, CF = 0 */
fault_here:
    vmwrite (%rbx), %rdx
not_reached:
    mov $0xEE, %eax                 /* no fault: exit code 0xEE */
    out %eax, $EXIT_PORT
    hlt

    .balign 8
vmxon_ptr:  .quad VMXON_REGION
vmcs_ptr:   .quad VMCS_REGION
