# Thin wrappers around Python: the work is done by sim/ (see README.md).
#
#   make test    create/refresh .venv if needed, run the test suite (parallel, pytest-xdist)
#   make demo    the hypervisor demo on the system RTL (vtx run examples/hypervisor/hypervisor.S),
#                with its waveform (build/waves/demo/hypervisor.vcd + .gtkw)
#   make bench   run the benchmarks (vtx bench: translation, vmx, system)
#   make lint    Verilator lint of the generated Verilog (vtx lint)
#   make formal  every formal proof and cover, with a results table (vtx formal)
#   make synth   FPGA build for the ULX3S (LFE5U-85F) + build/synth/report.md (vtx synth)
#   make waves   open the last run's VCD + .gtkw in GTKWave, or print their paths without it
#                (vtx waves open; the run named by build/waves/LAST, else the newest)
#   make clean   remove build/ (generated Verilog, Verilator models, runs, waves)
#
# WAVES=1 (e.g. `make test WAVES=1`) makes every simulation dump a VCD and a GTKWave save file
# into build/waves/<test>/.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -n auto

ifdef WAVES
export WAVES
endif

.PHONY: venv test demo bench lint formal synth clean waves

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed (editable install: sources need no reinstall).
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install --disable-pip-version-check -q -e .
	touch $@

test: $(STAMP)
	$(VPY) -m pytest $(PYTEST_ARGS) tests

# The demo's waveform: the SoC's ports only (registers, RIP, VM entries/exits, console; ~69 MB
# for its 0.27 M cycles, figures tests/test_docs.py checks), build/waves/demo/hypervisor.vcd +
# .gtkw; `make waves` opens it.
demo: $(STAMP)
	$(VENV)/bin/vtx run --waves build/waves/demo/hypervisor.vcd --waves-ports \
	    examples/hypervisor/hypervisor.S

bench: $(STAMP)
	$(VENV)/bin/vtx bench

lint: $(STAMP)
	$(VENV)/bin/vtx lint

formal: $(STAMP)
	$(VENV)/bin/vtx formal

synth: $(STAMP)
	$(VENV)/bin/vtx synth

waves: $(STAMP)
	$(VENV)/bin/vtx waves open

clean:
	rm -rf build
