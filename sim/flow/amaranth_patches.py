"""One narrow patch of Amaranth 0.5's RTLIL back end, applied by every flow that converts RTL.

Amaranth writes a `$meminit_v2` cell for every `Memory`, even when its initial contents are all
zero. The system's RAM (`rtl.soc.memory.SystemMemory`, 4 MiB = 2^25 bits) then costs ~1 minute
of RTLIL generation and a 13 MB Verilog file with 512 Ki `ram[i] = 0` lines, which Verilator
compiles for minutes. A memory with no `$meminit` cell has no initial value in Yosys's model;
every consumer here starts it at zero: Verilator zero-initialises variables (the flow does not
pass `--x-initial unique`) and ECP5 block RAM powers up cleared when the bitstream carries no
contents. So an all-zero memory is written without the cell; any other memory is unchanged.
"""

from amaranth.back import rtlil as _rtlil

_original = _rtlil.ModuleEmitter.emit_memory


def _emit_memory(self, cell_idx, cell):
    if not any(cell.init):
        return
    _original(self, cell_idx, cell)


if getattr(_rtlil.ModuleEmitter.emit_memory, "__name__", "") != "_emit_memory":
    _rtlil.ModuleEmitter.emit_memory = _emit_memory
