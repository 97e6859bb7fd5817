"""Simulation flow, lint and command-line tools of the VT-x project (`vtx`)."""
