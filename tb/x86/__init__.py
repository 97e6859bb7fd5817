"""Testbench helpers of the x86 core (reference runs on Unicorn, assembling with GNU as)."""
