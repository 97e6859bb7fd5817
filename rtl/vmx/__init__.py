"""The VMX unit: VMX instructions, the VMCS cache, VM entries and exits, exit decisions."""
