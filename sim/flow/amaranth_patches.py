"""Two narrow patches of Amaranth 0.5's RTLIL back end, applied by every flow that converts RTL.

All-zero memories. Amaranth writes a `$meminit_v2` cell for every `Memory`, even when its
initial contents are all zero. The system's RAM (`rtl.soc.memory.SystemMemory`, 4 MiB = 2^25
bits) then costs ~1 minute of RTLIL generation and a 13 MB Verilog file with 512 Ki `ram[i] = 0`
lines, which Verilator compiles for minutes. A memory with no `$meminit` cell has no initial
value in Yosys's model; every consumer here starts it at zero: Verilator zero-initialises
variables (the flow does not pass `--x-initial unique`) and ECP5 block RAM powers up cleared
when the bitstream carries no contents. So an all-zero memory is written without the cell; any
other memory is unchanged.

Read-during-write left to the RAM. Amaranth's synchronous read port returns the old data when
the same cycle writes its address (a `$memrd_v2` with `COLLISION_X_MASK` 0), and has no way to
say that a design never uses such a read. On ECP5 the pseudo-dual-port block RAM does not
define that case, so Yosys emulates it with a register and a multiplexer per data bit (the VMX
unit's 1,024-bit wide copy: about 2,000 LUT4). A memory created with the attribute
`no_rw_check` (`memory.Memory(..., attrs={"no_rw_check": 1})`; Yosys's own name for the
property, which its Verilog front end turns into the same mask) gets `COLLISION_X_MASK` all ones
on its read ports: such a read is undefined in Yosys's model, so no emulation is added.
Amaranth's simulator still returns the old data; the Verilog that Yosys writes for Verilator
assigns x to the read data in that case (Verilator picks a value). The design must not use such
a read (the VMX unit's formal harness proves it for its memory).
"""

from amaranth.back import rtlil as _rtlil
from amaranth.hdl import _ast

_original = _rtlil.ModuleEmitter.emit_memory


def _emit_memory(self, cell_idx, cell):
    if not any(cell.init):
        return
    _original(self, cell_idx, cell)


if getattr(_rtlil.ModuleEmitter.emit_memory, "__name__", "") != "_emit_memory":
    _rtlil.ModuleEmitter.emit_memory = _emit_memory


_original_read_port = _rtlil.ModuleEmitter.emit_read_port


def _emit_read_port(self, cell_idx, cell):
    memory = self.netlist.cells[cell.memory]
    if not memory.attributes.get("no_rw_check"):
        return _original_read_port(self, cell_idx, cell)
    builder = self.builder
    original_cell = builder.cell

    def cell_without_collision_check(kind, *args, parameters, **kwargs):
        mask = parameters["COLLISION_X_MASK"]
        parameters = dict(parameters, COLLISION_X_MASK=_ast.Const(-1, len(mask)))
        return original_cell(kind, *args, parameters=parameters, **kwargs)

    builder.cell = cell_without_collision_check
    try:
        return _original_read_port(self, cell_idx, cell)
    finally:
        del builder.cell


if getattr(_rtlil.ModuleEmitter.emit_read_port, "__name__", "") != "_emit_read_port":
    _rtlil.ModuleEmitter.emit_read_port = _emit_read_port
