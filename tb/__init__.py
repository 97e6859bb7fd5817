"""Testbench side of the VT-x project: the Python reference model and the page-table builder."""
