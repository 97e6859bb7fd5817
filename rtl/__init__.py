"""Amaranth gateware of the VT-x project: the translation path, later the VMX unit and the core."""
