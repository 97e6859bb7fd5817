"""Waveforms: translate filters from the RTL's enums, .gtkw grouping by block, `make waves`.

sim/waves/gtkw_filters.py makes one GTKWave translate filter file per enum of the RTL and finds
which VCD variable carries which enum (the generated Verilog's enum attributes first, name rules for
plain vectors); sim.waves writes the .gtkw that attaches them and groups the signals by block.
One small design (`WavesDemo`, below) runs under Verilator with waves (this file is also its
cocotb test module) so the names in the real VCD, the Verilog and the save file are checked
against each other; the filters are checked by decoding the VCD's values through them exactly
as GTKWave looks them up (the hex text of the value, zero-padded to the trace's width).

    .venv/bin/python -m pytest -q tests/test_waves.py
"""

# No `from __future__ import annotations`: wiring reads the signature from live annotations.
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cocotb
import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from rtl.arch.paging import Outcome, PageSize
from rtl.arch.vmx import ExitReason, VmInstructionError, VmxMode, VmxOp
from rtl.translation.walker import WalkState
from sim import waves
from sim.waves import gtkw_filters, gtkw_insn
from sim.waves.gtkw_filters import EnumDecoder, EnumTable, rtl_enums, write_filter_files

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPLEVEL = "waves_demo"


# ---------------------------------------------------------------------------------------------
# The demo design: an enum FSM in a submodule, an enum port, a struct port with enum fields and
# a plain 16-bit exit-reason port (which only the name rules can decode).


class _Stepper(wiring.Component):
    """A walker-like FSM: FREE -> PROBE_GUEST -> MEM_WAIT -> DONE -> FREE while `go` is high."""

    go: In(1)
    done: Out(1)

    def elaborate(self, platform):
        m = Module()
        state = Signal(WalkState, name="state")
        order = [WalkState.FREE, WalkState.PROBE_GUEST, WalkState.MEM_WAIT, WalkState.DONE]
        with m.If(self.go):
            for here, there in zip(order, order[1:] + order[:1], strict=True):
                with m.If(state == here):
                    m.d.sync += state.eq(there)
        m.d.comb += self.done.eq(state == WalkState.DONE)
        return m


RESP_LAYOUT = data.StructLayout({"outcome": Outcome, "page_size": PageSize, "tag": 8})

#: Instructions `WavesDemo` shows on its `retired_bytes` port, one a cycle, with their AT&T text
#: worked out by hand from the Intel SDM's encodings (not from objdump).
DEMO_INSNS = (
    ("b810000000", "mov $0x10,%eax"),   # B8+rd id: MOV r32, imm32; rd 0 = EAX
    ("4801cb", "add %rcx,%rbx"),        # REX.W 01 /r: ADD r/m64, r64; ModRM CB: rcx, rbx
    ("e6e9", "out %al,$0xe9"),          # E6 ib: OUT imm8, AL
    ("0f01c2", "vmlaunch"),             # 0F 01 C2
    ("75fb", "jne .-0x3"),              # 75 cb: JNE rel8; -5 from the next instruction, 2 bytes on
)
#: What follows an instruction in its 15-byte window (INT3s): the filter must show the first
#: instruction only, as the SoC's window holds the bytes after it too.
DEMO_FILL = 0xCC
#: Bytes `WavesDemo` shows on its `console_data` port, and how each must read.
DEMO_CONSOLE = ((ord("H"), "H"), (ord("i"), "i"), (0x20, "' '"), (0x0A, "\\n"), (0x00, "\\x00"))


def demo_window(hex_bytes: str) -> int:
    """The 120-bit port value of an instruction: byte 0 in the low bits (as `rtl.core` packs
    ``retired_bytes``), the rest of the 15 bytes `DEMO_FILL`."""
    return int.from_bytes(bytes.fromhex(hex_bytes).ljust(15, bytes([DEMO_FILL])), "little")


class WavesDemo(wiring.Component):
    go: In(1)
    mode: Out(VmxMode)
    resp: Out(RESP_LAYOUT)
    vm_exit_reason: Out(16)
    done: Out(1)
    retired_bytes: Out(120)
    console_data: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.stepper = stepper = _Stepper()
        m.d.comb += [stepper.go.eq(self.go), self.done.eq(stepper.done)]
        # One instruction and one console byte a cycle while `go` is high, round and round.
        for port, values in ((self.retired_bytes, [demo_window(h) for h, _ in DEMO_INSNS]),
                             (self.console_data, [b for b, _ in DEMO_CONSOLE])):
            step = Signal(range(len(values)), name=f"{port.name}_step")
            with m.If(self.go):
                m.d.sync += step.eq(Mux(step == len(values) - 1, 0, step + 1))
            with m.Switch(step):
                for i, value in enumerate(values):
                    with m.Case(i):
                        m.d.comb += port.eq(value)
        with m.If(stepper.done):
            m.d.sync += [
                self.mode.eq(VmxMode.ROOT),
                self.resp.outcome.eq(Outcome.EPT_VIOLATION),
                self.resp.page_size.eq(PageSize.SIZE_2M),
                self.resp.tag.eq(self.resp.tag + 1),
                self.vm_exit_reason.eq(ExitReason.EPT_VIOLATION.value),
            ]
        return m


@cocotb.test()
async def run_demo(dut):
    """Two rounds of the FSM."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.go.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.go.value = 1
    await ClockCycles(dut.clk, 9)
    assert int(dut.vm_exit_reason.value) == ExitReason.EPT_VIOLATION.value


@pytest.fixture(scope="module")
def demo_run(tests_dir, tmp_path_factory):
    from conftest import make_private_build_root

    from sim import flow

    # A build root of its own (sharing the model caches): the run's directory would otherwise
    # be under the user's build/waves/. Each pytest-xdist worker sets up this module fixture
    # itself, in a directory of its own.
    root = make_private_build_root(tmp_path_factory.mktemp("waves-demo"))
    result = flow.simulate(WavesDemo, TOPLEVEL, {}, "test_waves", testcase="run_demo",
                           waves=True, test_dirs=[tests_dir], build_root=root,
                           run_name="test_waves-demo")
    verilog = flow.generate_verilog(WavesDemo, TOPLEVEL, {})
    return result, verilog


def _trace_filters(gtkw_text: str) -> dict[str, str]:
    """{trace name: file of the translate filter it uses} from a .gtkw (GTKWave's rules: a
    ``^N file`` line makes filter N current, flag 0x2000 in ``@flags`` applies it)."""
    out: dict[str, str] = {}
    flags = 0
    current = None
    for line in gtkw_text.splitlines():
        if line.startswith("@"):
            flags = int(line[1:], 16)
        elif line.startswith("^"):
            current = line.split(" ", 1)[1]
        elif line and line[0] not in "[*-#":
            if flags & 0x2000:
                out[line] = current
    return out


def _group_members(gtkw_text: str) -> dict[str, list[str]]:
    """{group label: the traces directly or indirectly inside it}."""
    members: dict[str, list[str]] = {}
    stack: list[str] = []
    flags = 0
    for line in gtkw_text.splitlines():
        if line.startswith("@"):
            flags = int(line[1:], 16)
        elif line.startswith("-"):
            if flags & 0x800000:       # group begin
                stack.append(line[1:])
                members.setdefault(line[1:], [])
            elif flags & 0x1000000:    # group end
                stack.pop()
        elif line and line[0] not in "[*^#" and stack:
            for label in stack:
                members[label].append(line)
    return members


# ---------------------------------------------------------------------------------------------
# Filter files


def test_required_enums_are_found_in_the_rtl():
    tables = rtl_enums()
    assert set(gtkw_filters.REQUIRED_ENUMS) <= set(tables), rtl_enums.skipped
    # The SoC's stop reason is picked up as soon as rtl.soc defines it.
    try:
        from rtl.soc import RunStop
    except ImportError:
        pass
    else:
        assert f"{RunStop.__module__}.RunStop" in tables


@pytest.mark.parametrize("origin", gtkw_filters.REQUIRED_ENUMS)
def test_filter_file_lists_every_member_with_its_value(origin, tmp_path):
    table = rtl_enums()[origin]
    module_name, _, class_name = origin.rpartition(".")
    enum_cls = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    path = write_filter_files([table], tmp_path)[table]
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    digits = -(-table.width // 4)
    expected = {f"{member.value:0{digits}x}": member.name for member in enum_cls}
    found = dict(line.split(" ", 1) for line in lines)
    assert found == expected
    assert len(lines) == len(enum_cls)


def test_filter_values_by_hand(tmp_path):
    """GTKWave prints a trace in hex with one digit per started nibble: the keys must match."""
    tables = rtl_enums()
    paths = write_filter_files(tables.values(), tmp_path)

    def lines(origin):
        return set(paths[tables[origin]].read_text().splitlines())

    assert {"0 OUTSIDE", "1 ROOT", "2 NON_ROOT"} <= lines("rtl.arch.vmx.VmxMode")
    assert {"0030 EPT_VIOLATION", "0012 VMCALL", "0000 EXCEPTION_NMI"} \
        <= lines("rtl.arch.vmx.ExitReason")                                     # 16 bits
    assert {"04 VMLAUNCH_NONCLEAR_VMCS", "1c INVALID_INVEPT_INVVPID_OPERAND"} \
        <= lines("rtl.arch.vmx.VmInstructionError")                            # 5 bits
    assert {"7 VMLAUNCH", "c INVVPID"} <= lines("rtl.arch.vmx.VmxOp")
    assert {"a DONE", "0 FREE"} <= lines("rtl.translation.walker.WalkState")
    assert {"3 EPT_MISCONFIG", "4 GENERAL_PROTECTION"} <= lines("rtl.arch.paging.Outcome")
    # The 32-bit VMCS exit-reason field: entry failures carry bit 31.
    field = gtkw_filters.field_tables(tables)["ExitReasonField"]
    text = field.filter_text()
    assert "80000021 ENTRY_FAILURE INVALID_GUEST_STATE" in text
    assert "00000030 EPT_VIOLATION" in text


def test_same_name_other_members_get_their_own_file(tmp_path):
    a = EnumTable("_State", 2, ((0, "IDLE"), (1, "RUN")), "x._State")
    b = EnumTable("_State", 2, ((0, "IDLE"), (1, "WAIT"), (2, "DONE")), "y._State")
    paths = write_filter_files([a, b], tmp_path)
    assert paths[a] != paths[b]
    assert "1 RUN" in paths[a].read_text() and "1 WAIT" in paths[b].read_text()


# ---------------------------------------------------------------------------------------------
# Which signal carries which enum


def test_verilog_enum_attributes_are_read(demo_run):
    _, verilog = demo_run
    found = {(item.module, item.wire): item.table for item in gtkw_filters.verilog_enums(verilog)}
    assert found[((TOPLEVEL, "stepper"), "state")].name == "WalkState"
    assert found[((TOPLEVEL,), "mode")].name == "VmxMode"
    assert found[((TOPLEVEL,), "resp.outcome")].name == "Outcome"
    assert dict(found[((TOPLEVEL, "stepper"), "state")].members) == {
        m.value: m.name for m in WalkState}
    # The plain 16-bit port has no enum in the Verilog: only the name rules can decode it.
    assert not any(wire == "vm_exit_reason" for _, wire in found)
    ports = gtkw_filters.verilog_ports(verilog)
    assert {"go", "done"} <= set(ports[(TOPLEVEL, "stepper")])


def test_decoder_prefers_verilog_then_name_rules(demo_run):
    _, verilog = demo_run
    decoder = EnumDecoder(verilog)
    # From the Verilog, canonicalised to the Python enum of the same name and members.
    assert decoder.lookup((TOPLEVEL, "stepper"), "state", 4).origin \
        == "rtl.translation.walker.WalkState"
    # Name rules, only at the enum's width.
    assert decoder.lookup((TOPLEVEL,), "vm_exit_reason", 16, "vm_exit_reason").name \
        == "ExitReason"
    assert decoder.lookup((TOPLEVEL,), "vm_exit_reason", 12, "vm_exit_reason") is None
    assert decoder.lookup(("soc",), "wc.vm_instruction_error", 32,
                          "wc.vm_instruction_error").name == "VmInstructionErrorField"
    assert decoder.lookup(("x",), "result__payload.error", 5, "result__payload.error").name \
        == VmInstructionError.__name__
    assert decoder.lookup(("x",), "instr__payload.op", 4, "instr__payload.op").name \
        == VmxOp.__name__
    # Single bits are never translated; unknown names are left alone.
    assert decoder.lookup((TOPLEVEL,), "done", 1) is None
    assert decoder.lookup((TOPLEVEL,), "counter", 4, "counter") is None


# ---------------------------------------------------------------------------------------------
# The save file of a real run


def test_gtkw_attaches_filters_to_matching_traces(demo_run):
    result, _ = demo_run
    text = result.gtkw.read_text()
    filters = _trace_filters(text)
    expect = {
        f"{TOPLEVEL}.stepper.state[3:0]": "WalkState.txt",
        f"{TOPLEVEL}.mode[1:0]": "VmxMode.txt",
        f"{TOPLEVEL}.\\resp.outcome[2:0]": "Outcome.txt",
        f"{TOPLEVEL}.\\resp.page_size[1:0]": "PageSize.txt",
        f"{TOPLEVEL}.vm_exit_reason[15:0]": "ExitReason.txt",
    }
    for trace, name in expect.items():
        assert trace in filters, f"{trace} has no filter in {result.gtkw}"
        assert Path(filters[trace]).name == name
        assert Path(filters[trace]).is_file()
        assert Path(filters[trace]).parent == result.gtkw.parent / "filters"
    # Traces without an enum get none.
    assert f"{TOPLEVEL}.resp[12:0]" in text and f"{TOPLEVEL}.resp[12:0]" not in filters
    assert not any("go" in t.rsplit(".", 1)[-1] for t in filters)


def test_gtkw_trace_names_exist_in_the_vcd(demo_run):
    """Every trace names a VCD variable the way GTKWave names it (bit range appended, names
    with a dot escaped); no variable name keeps a character GTKWave cannot load."""
    result, _ = demo_run
    variables = waves.read_vcd_vars(result.vcd)
    names = {v.gtkwave_name for v in variables}
    traces = [t.path for t in waves.read_gtkw_traces(result.gtkw)]
    assert traces and set(traces) <= names
    assert not [v.name for v in variables if ":" in v.name]


def test_gtkw_groups_by_interface_and_block(demo_run):
    result, _ = demo_run
    text = result.gtkw.read_text()
    groups = _group_members(text)
    assert groups["clock/reset"] == [f"{TOPLEVEL}.clk", f"{TOPLEVEL}.rst"]
    # The top-level ports as today: a group per `__` prefix, else "(ports)".
    assert f"{TOPLEVEL}.mode[1:0]" in groups["(ports)"]
    assert f"{TOPLEVEL}.\\resp.outcome[2:0]" in groups["(ports)"]  # a decoded field of `resp`
    # One group per block (VCD scope below the top), holding its ports and its enum signals.
    stepper = groups["stepper"]
    assert f"{TOPLEVEL}.stepper.state[3:0]" in stepper
    assert {f"{TOPLEVEL}.stepper.go", f"{TOPLEVEL}.stepper.done"} <= set(stepper)
    assert not any(t.startswith(f"{TOPLEVEL}.stepper.") for g, ts in groups.items()
                   if g != "stepper" for t in ts)
    # Blocks open closed (flag 0x400000 on the group's begin line).
    assert re.search(r"@([0-9a-f]+)\n-stepper\n", text)
    begin = int(re.search(r"@([0-9a-f]+)\n-stepper\n", text).group(1), 16)
    assert begin & 0x400000


def test_filters_decode_the_vcd_values(demo_run):
    """Decoding the dump's values through the attached filter files (GTKWave's lookup: the
    zero-padded hex text of the value) gives the enum names the design went through."""
    result, _ = demo_run
    traces = {t.path: t for t in waves.read_gtkw_traces(result.gtkw)}
    by_gname = {v.gtkwave_name: v for v in waves.read_vcd_vars(result.vcd)}

    def decoded(gname):
        var = by_gname[gname]
        table = waves.read_filter_file(traces[gname].filter_file)
        digits = -(-var.width // 4)
        values = waves.read_vcd_values(result.vcd, [var.path])[var.path]
        return [table.get(f"{v:0{digits}x}", f"?{v}") for _, v in values if v is not None]

    states = decoded(f"{TOPLEVEL}.stepper.state[3:0]")
    assert states[:5] == ["FREE", "PROBE_GUEST", "MEM_WAIT", "DONE", "FREE"]
    assert decoded(f"{TOPLEVEL}.vm_exit_reason[15:0]")[-1] == "EPT_VIOLATION"
    assert decoded(f"{TOPLEVEL}.mode[1:0]") == ["OUTSIDE", "ROOT"]
    assert decoded(f"{TOPLEVEL}.\\resp.outcome[2:0]")[-1] == "EPT_VIOLATION"


def test_gtkw_attaches_insn_and_console_filters(demo_run):
    """`retired_bytes` gets the run's instruction filter, `console_data` the character one,
    and decoding the dump's values through them reads the demo's instructions and bytes."""
    result, _ = demo_run
    filters = _trace_filters(result.gtkw.read_text())
    insn = Path(filters[f"{TOPLEVEL}.retired_bytes[119:0]"])
    console = Path(filters[f"{TOPLEVEL}.console_data[7:0]"])
    assert insn == result.gtkw.parent / "filters" / f"{TOPLEVEL}.insn.txt"
    assert console.name == "Console.txt"
    insn_table, console_table = waves.read_filter_file(insn), waves.read_filter_file(console)
    seen = waves.read_vcd_values(result.vcd, [f"{TOPLEVEL}.retired_bytes",
                                              f"{TOPLEVEL}.console_data"])
    # GTKWave's lookup: the value's hex text, one digit per started nibble of the width.
    shown = [insn_table.get(f"{v:030x}") for _, v in seen[f"{TOPLEVEL}.retired_bytes"]]
    assert shown[:6] == [text for _, text in DEMO_INSNS] + [DEMO_INSNS[0][1]]
    shown = [console_table.get(f"{v:02x}") for _, v in seen[f"{TOPLEVEL}.console_data"]]
    assert shown[:len(DEMO_CONSOLE)] == [text for _, text in DEMO_CONSOLE]
    # One line per value the dump holds: the table is the run's, not every possible window.
    assert len(insn_table) == len(DEMO_INSNS)


def _assemble_one(line: str, tmp_path: Path) -> bytes:
    """The bytes GNU as makes of one instruction (AT&T syntax, 64-bit)."""
    src, obj, raw = tmp_path / "i.s", tmp_path / "i.o", tmp_path / "i.bin"
    src.write_text(f".text\n{line}\n")
    subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True, capture_output=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(raw)], check=True,
                   capture_output=True)
    return raw.read_bytes()


@pytest.mark.parametrize(("source", "expected"), [
    ("mov $0x10, %eax", "mov $0x10,%eax"),
    ("add %rcx, %rbx", "add %rcx,%rbx"),
    ("lea 0x10(%rip), %rsi", "lea 0x10(%rip),%rsi"),     # objdump's "# address" comment dropped
    ("vmresume", "vmresume"),
    ("movabs $0x1122334455667788, %rax", "movabs $0x1122334455667788,%rax"),  # 10 bytes
    ("1: jnz 1b", "jne .+0x0"),                          # branches: relative to the instruction
    ("call .+0x20", "call .+0x20"),
    ("jmp .-0x100", "jmp .-0x100"),
])
def test_insn_filter_disassembles_assembled_bytes(source, expected, tmp_path):
    """Bytes GNU as made of a known instruction, in a 15-byte window after which come other
    bytes (a whole second instruction, then INT3s), read as that instruction."""
    code = _assemble_one(source, tmp_path)
    window = (code + bytes.fromhex("4801cb")).ljust(15, b"\xcc")[:15]
    value = int.from_bytes(window, "little")
    text = gtkw_insn.insn_filter_text([value, 0])
    table = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            key, _, label = line.partition(" ")
            table[key] = label
    assert table[f"{value:030x}"] == expected
    assert table["0" * 30] == "add %al,(%rax)"      # 00 00: ADD r/m8, r8


def test_console_filter_reads_characters():
    table = dict(line.split(" ", 1) for line in gtkw_insn.console_filter_text().splitlines()
                 if not line.startswith("#"))
    assert len(table) == 256
    assert table["41"] == "A" and table["7e"] == "~" and table["23"] == "#"
    assert table["20"] == "' '" and table["0a"] == "\\n" and table["0d"] == "\\r"
    assert table["00"] == "\\x00" and table["7f"] == "\\x7f" and table["ff"] == "\\xff"
    assert table["5c"] == "\\\\"


@pytest.mark.parametrize(("relpath", "width", "kind"), [
    ("TOP.retired_bytes", 120, "insn"),          # ports-only dump: no design scope
    ("retired_bytes", 120, "insn"),              # a port, below the design's scope
    ("soc.core.retired_bytes", 120, "insn"),
    ("soc.core.window", 120, "insn"),            # the core's fetch window (full dump)
    ("soc.core.decoder.raw", 120, "insn"),       # the decoder's copy (Verilator names it so)
    ("core.decoder.window", 120, "insn"),        # Amaranth's simulator
    ("retired_bytes", 64, None),                 # another width: not instruction bytes
    ("soc.core.buf", 120, None),
    ("TOP.console_data", 8, "console"),
    ("soc.system.console_data", 8, "console"),
    ("console_data", 16, None),
    ("retired_rip", 64, None),
])
def test_which_signals_get_insn_and_console_filters(relpath, width, kind):
    assert gtkw_insn.filter_kind(relpath, width) == kind


def test_vcd_vector_values_skips_unknowns_and_scalars(tmp_path):
    vcd = tmp_path / "v.vcd"
    vcd.write_text("$timescale 1ps $end\n$scope module t $end\n"
                   "$var wire 8 ! a $end\n$var wire 1 # b $end\n$var wire 8 a! c $end\n"
                   "$upscope $end\n$enddefinitions $end\n"
                   "#0\nbx !\n0#\nb1 a!\n#5\nb101 !\n1#\n#6\nb11111111 !\nb101 a!\n")
    found = gtkw_insn.vcd_vector_values(vcd, ["!", "#", "a!"])
    assert found == {"!": {5, 255}, "#": set(), "a!": {1, 5}}


# ---------------------------------------------------------------------------------------------
# The time range a save file opens on


_TIMED_VCD = """$timescale 10 ns $end
$scope module top $end
$var wire 1 ! clk $end
$var wire 8 " console_data [7:0] $end
$upscope $end
$enddefinitions $end
#5
0!
b1000001 "
#7
1!
#12345
0!
b1010 "
"""


def test_time_range_in_gtkwave_units(tmp_path):
    """First and last timestamp, times the timescale's multiplier (GTKWave counts 10 ns
    steps in ns: #12345 is 123450 ns)."""
    vcd = tmp_path / "t.vcd"
    vcd.write_text(_TIMED_VCD)
    assert waves.read_vcd_time_range(vcd) == (50, 123450)
    # The tail is read backwards in blocks: a last timestamp far from the end is still found.
    vcd.write_text(_TIMED_VCD + "b1 \"\n" * 40000)
    assert waves.read_vcd_time_range(vcd) == (50, 123450)
    vcd.write_text(_TIMED_VCD.split("#5")[0])
    assert waves.read_vcd_time_range(vcd) is None


def test_fit_zoom_follows_gtkwave_formula():
    """At zoom z GTKWave draws 2**-z time units per 200 pixels: the zoom for 650 pixels
    makes 650 pixels span the run."""
    for first, last in ((0, 11_111_400_000), (50, 123450), (0, 3_520_000_000)):
        zoom = waves.fit_zoom(first, last, 650)
        assert 650 * 2 ** -zoom / 200 == pytest.approx(last - first)
    assert waves.fit_zoom(0, 2, 650) == 0.0         # never zoomed in past GTKWave's limit


def test_gtkw_opens_on_the_whole_run(demo_run):
    """The save file sets the start, the window size and the zoom for the whole run; the port
    groups open, the block groups closed."""
    result, _ = demo_run
    text = result.gtkw.read_text()
    first, last = waves.read_vcd_time_range(result.vcd)
    assert last > first
    assert f"[timestart] {first}\n" in text and "[size] 1400 800\n" in text
    zoom = float(re.search(r"^\*(-?[0-9.]+) -1", text, re.M).group(1))
    assert zoom == pytest.approx(waves.fit_zoom(first, last), abs=1e-5)
    flags = {label: int(f, 16) for f, label in re.findall(r"@([0-9a-f]+)\n-(.*)\n", text)
             if int(f, 16) & 0x800000}      # the group-begin lines
    assert not flags["(ports)"] & 0x400000 and flags["stepper"] & 0x400000


def test_render_png_draws_the_decoded_run(demo_run, tmp_path):
    pytest.importorskip("matplotlib")
    result, _ = demo_run
    png = waves.render_png(result.vcd, tmp_path / "w.png", result.gtkw,
                           [f"{TOPLEVEL}.stepper.*", f"{TOPLEVEL}.mode"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# GTKWave itself (under Xvfb): what a user sees when the save file opens

#: Set to leave out the tests that run GTKWave (a machine without the Debian packages).
NO_GTKWAVE_ENV = "VTX_TEST_NO_GTKWAVE"
#: Seconds GTKWave may take to load a dump, run the script and quit before it is killed.
GTKWAVE_TIMEOUT = 60


def _require_gtkwave() -> None:
    """Skip if excluded explicitly, else fail (not skip) without GTKWave or Xvfb: CI installs
    them (.ci/run), so a missing one is a broken setup, not an optional extra."""
    if os.environ.get(NO_GTKWAVE_ENV):
        pytest.skip(f"{NO_GTKWAVE_ENV} is set: GTKWave tests left out")
    # xauth: xvfb-run will not start without it (a Recommends of xvfb only).
    missing = [tool for tool in ("gtkwave", "xvfb-run", "xauth") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install the Debian packages gtkwave, xvfb "
                    f"and xauth (apt-get install gtkwave xvfb xauth), or set {NO_GTKWAVE_ENV}=1 "
                    "to leave the GTKWave tests out", pytrace=False)


def _gtkwave_tcl(gtkw: Path, body: str, tmp_path: Path) -> str:
    """Open `gtkw` in GTKWave on a virtual display, run the Tcl `body` (which writes to the
    channel ``$out``), quit; returns what it wrote. A Tcl error is returned as ``ERROR: ...``.

    GTKWave runs in a session of its own, killed whole by the watchdog if it outlives
    `GTKWAVE_TIMEOUT`. ``xvfb-run -a`` picks its display number racily when pytest-xdist workers
    start several at once: a run that wrote nothing is tried again."""
    out = tmp_path / "gtkwave-out.txt"
    script = tmp_path / "gtkwave-probe.tcl"
    script.write_text(f'set out [open "{out}" w]\n'
                      f"if {{[catch {{\n{body}\n}} err]}} {{ puts $out \"ERROR: $err\" }}\n"
                      "close $out\ngtkwave::/File/Quit\n")
    log = ""
    for _attempt in range(3):
        out.unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "gtkwave", "-S", str(script),
             str(gtkw)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        try:
            log = proc.communicate(timeout=GTKWAVE_TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"GTKWave did not quit within {GTKWAVE_TIMEOUT} s on {gtkw}")
        if out.is_file():
            return out.read_text()
    pytest.fail(f"GTKWave wrote nothing for {gtkw}; its output:\n{log[-3000:]}")


#: Tcl: the visible time window and the dump's range, one ``name value`` a line.
_WINDOW_TCL = """\
puts $out "start [gtkwave::getWindowStartTime]"
puts $out "end [gtkwave::getWindowEndTime]"
puts $out "min [gtkwave::getMinTime]"
puts $out "max [gtkwave::getMaxTime]"
"""


def _check_whole_run_visible(gtkw: Path, vcd: Path, tmp_path: Path, extra_tcl: str = "") -> str:
    """GTKWave opens `gtkw` on the whole run: from the dump's first time to at least its last,
    and not absurdly further (4x). Returns the Tcl output (for `extra_tcl`'s lines)."""
    text = _gtkwave_tcl(gtkw, _WINDOW_TCL + extra_tcl, tmp_path)
    assert "ERROR" not in text, text
    seen = dict(line.split(" ", 1) for line in text.splitlines()[:4])
    start, end, first, last = (int(seen[k]) for k in ("start", "end", "min", "max"))
    # GTKWave's own view of the dump agrees with what the save file was made from.
    assert (first, last) == waves.read_vcd_time_range(vcd)
    assert last > first
    assert start == first, f"window starts at {start}, the dump at {first}"
    assert end >= last, f"window ends at {end}, before the dump's end {last}"
    assert end - start <= 4 * (last - first), f"window {start}..{end} for a run {first}..{last}"
    return text


def _values_at(trace_times: Sequence[tuple[str, int]]) -> str:
    """Tcl: ``value <time> <trace> = <shown text>`` for each (trace, time)."""
    # The name through a variable: in a quoted string its "[7:0]" would be a command.
    return "".join(
        f"gtkwave::setMarker {t}\nset name {{{name}}}\n"
        f'puts $out "value {t} $name = [gtkwave::getTraceValueAtMarkerFromName $name]"\n'
        for name, t in trace_times)


def _shown_values(text: str) -> dict[tuple[str, int], str]:
    shown = {}
    for line in text.splitlines():
        if line.startswith("value "):
            head, _, value = line.partition(" = ")
            _, t, name = head.split(" ", 2)
            shown[(name, int(t))] = value
    return shown


def test_gtkwave_opens_the_demo_design_on_the_whole_run(demo_run, tmp_path):
    """A flow (cocotb, WAVES=1) dump: the whole run on screen, and GTKWave's own text for
    `retired_bytes` and `console_data` at each of their changes is the instruction and the
    character the design put there."""
    _require_gtkwave()
    result, _ = demo_run
    names = {"insn": f"{TOPLEVEL}.retired_bytes", "console": f"{TOPLEVEL}.console_data"}
    changes = waves.read_vcd_values(result.vcd, list(names.values()))
    expected_text = {demo_window(h): text for h, text in DEMO_INSNS}
    expected_text_console = dict(DEMO_CONSOLE)
    probes, expected = [], {}
    for kind, path in names.items():
        gname = f"{path}[119:0]" if kind == "insn" else f"{path}[7:0]"
        table = expected_text if kind == "insn" else expected_text_console
        for t, value in changes[path]:
            if value in table:
                probes.append((gname, t))
                expected[(gname, t)] = table[value]
    assert len(probes) >= len(DEMO_INSNS) + len(DEMO_CONSOLE)
    text = _check_whole_run_visible(result.gtkw, result.vcd, tmp_path, _values_at(probes))
    assert _shown_values(text) == expected


def test_gtkwave_opens_translate_waves_on_the_whole_run(tmp_path):
    """`vtx translate --waves` (Amaranth's simulator: no model to build): the whole run."""
    _require_gtkwave()
    vcd = tmp_path / "t.vcd"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "translate", "--sim", "amaranth",
                           "--waves", str(vcd), str(REPO_ROOT / "examples" / "ept_misconfig.json")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    _check_whole_run_visible(vcd.with_suffix(".gtkw"), vcd, tmp_path)


#: `vtx run --waves` without --waves-ports builds the full tracing model of the SoC (minutes the
#: first time, and nothing else in the suite needs it): opt-in like tests/test_run.py's tracing
#: tests. The ports-only model (`make demo`'s) is built by the suite anyway (tests/test_docs.py).
needs_tracing_model = pytest.mark.skipif(
    not (os.environ.get("VTX_TEST_VERILATOR_WAVES") or
         os.environ.get("WAVES", "").lower() in ("1", "yes", "true", "on")),
    reason="builds another (tracing) Verilator model: set VTX_TEST_VERILATOR_WAVES=1 or WAVES=1")


def _vtx_run_ports(program: Path, vcd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", "--waves", str(vcd),
                           "--waves-ports", str(program)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr


def test_gtkwave_opens_vtx_run_ports_waves_on_the_whole_run(tmp_path):
    """`make demo`'s kind of dump (`vtx run --waves --waves-ports`) of hello.S: the whole run on
    screen; at retirements GTKWave shows the instruction objdump lists at that RIP in the
    linked program, and the console bytes read as "Hello, world!"."""
    from sim.run.program import load_program

    _require_gtkwave()
    program_path = REPO_ROOT / "examples" / "programs" / "hello.S"
    vcd = tmp_path / "hello.vcd"
    _vtx_run_ports(program_path, vcd)
    gtkw = vcd.with_suffix(".gtkw")
    filters = _trace_filters(gtkw.read_text())
    assert Path(filters["TOP.retired_bytes[119:0]"]).name == "hello.insn.txt"
    assert Path(filters["TOP.console_data[7:0]"]).name == "Console.txt"

    program = load_program(program_path)
    changes = waves.read_vcd_values(vcd, ["TOP.retired", "TOP.retired_rip", "TOP.retired_len",
                                          "TOP.retired_bytes", "TOP.console_valid",
                                          "TOP.console_data"])

    def at(path, t):
        return [v for u, v in changes[path] if u <= t][-1]

    retirements = [t for t, v in changes["TOP.retired"] if v == 1]
    probes, expected = [], {}
    for t in retirements[:40]:
        rip, length = at("TOP.retired_rip", t), at("TOP.retired_len", t)
        window = at("TOP.retired_bytes", t).to_bytes(15, "little")
        # Byte 0 of the port is the instruction's first byte in memory.
        offset = rip - program.base
        assert window[:length] == program.image[offset:offset + length]
        listed = program.disassembly[rip]
        # objdump's text of the linked program (real addresses): equal up to what the filter
        # cannot know, a branch target or a RIP-relative address (same mnemonic then).
        if "#" in listed or listed.split()[0] in ("call", "jmp") or listed.startswith("j"):
            expected[("TOP.retired_bytes[119:0]", t)] = listed.split()[0]
        else:
            expected[("TOP.retired_bytes[119:0]", t)] = listed
        probes.append(("TOP.retired_bytes[119:0]", t))
    printed = [t for t, v in changes["TOP.console_valid"] if v == 1]
    probes += [("TOP.console_data[7:0]", t) for t in printed]
    text = _check_whole_run_visible(gtkw, vcd, tmp_path, _values_at(probes))
    shown = _shown_values(text)
    for key, want in expected.items():
        got = shown[key]
        assert (got.split()[0] if " " not in want else got) == want, (key, got, want)
    console = "".join(" " if c == "' '" else "\n" if c == "\\n" else c
                      for c in (shown[("TOP.console_data[7:0]", t)] for t in printed))
    assert console == "Hello, world!\n"


@needs_tracing_model
def test_full_dump_decodes_the_core_window(tmp_path):
    """`vtx run --waves` (every signal): the ports, the core's and the decoder's window read as
    instructions, with a line for every value they take."""
    vcd = tmp_path / "exit.vcd"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", "--waves", str(vcd),
                           str(REPO_ROOT / "examples" / "programs" / "exit_code.S")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    filters = _trace_filters(vcd.with_suffix(".gtkw").read_text())
    insn = vcd.parent / "filters" / "exit.insn.txt"
    for trace in ("TOP.soc_run.retired_bytes[119:0]", "TOP.soc_run.soc.core.window[119:0]",
                  "TOP.soc_run.soc.core.decoder.raw[119:0]"):
        assert Path(filters[trace]) == insn, trace
    assert Path(filters["TOP.soc_run.console_data[7:0]"]).name == "Console.txt"
    table = waves.read_filter_file(insn)
    window = "TOP.soc_run.soc.core.window"
    values = {v for _, v in waves.read_vcd_values(vcd, [window])[window] if v is not None}
    assert values and all(f"{v:030x}" in table for v in values)


def test_gtkwave_opens_the_demo_on_the_whole_run(tmp_path):
    """The real `make demo` dump (1.1 M cycles, ~90 MB): the whole run on screen."""
    _require_gtkwave()
    vcd = tmp_path / "hypervisor.vcd"
    _vtx_run_ports(REPO_ROOT / "examples" / "hypervisor" / "hypervisor.S", vcd)
    _check_whole_run_visible(vcd.with_suffix(".gtkw"), vcd, tmp_path)


def test_gtkwave_itself_knows_every_trace(demo_run, tmp_path):
    """GTKWave loads the dump and has a facility for every trace."""
    _require_gtkwave()
    result, _ = demo_run
    text = _gtkwave_tcl(
        result.gtkw,
        "for {set i 0} {$i < [gtkwave::getNumFacs]} {incr i} "
        "{ puts $out [gtkwave::getFacName $i] }", tmp_path)
    facilities = set(text.splitlines())
    traces = {t.path for t in waves.read_gtkw_traces(result.gtkw)}
    assert traces <= facilities, traces - facilities


# ---------------------------------------------------------------------------------------------
# Grouping without the Verilog (a hand-written Verilator-style dump)

_VCD = """$timescale 1ps $end
$scope module $rootio $end
$var wire 1 ! clk $end
$var wire 1 " rst $end
$var wire 2 # vmx_mode [1:0] $end
$var wire 16 $ vm_exit_reason [15:0] $end
$upscope $end
$scope module soc $end
$var wire 1 % clk $end
$var wire 1 & rst $end
$var wire 2 ' vmx_mode [1:0] $end
$var wire 16 ( vm_exit_reason [15:0] $end
$var wire 1 ) $auto$verilog_backend.cc:2355:dump_module$1 $end
$scope module core $end
$var wire 5 * state [4:0] $end
$var wire 1 + mem_req__valid $end
$var wire 7 , $12 [6:0] $end
$upscope $end
$scope module vmx $end
$var wire 4 - instr__payload.op [3:0] $end
$var wire 1 . instr__valid $end
$scope module cache $end
$var wire 1 / rd__en $end
$upscope $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
b00 #
b00 '
b01010 *
#10
b01 '
b0000000000110000 (
"""


def test_blocks_by_scope_and_name_rules_without_verilog(tmp_path):
    vcd = tmp_path / "soc.vcd"
    vcd.write_text(_VCD)
    size = vcd.stat().st_size
    # A 5-bit CoreState of the test's own, whatever the core's is today.
    core_state = EnumTable("CoreState", 5, tuple((i, f"S{i}") for i in range(17)), "t.CoreState")
    enums = {k: v for k, v in rtl_enums().items() if v.name != "CoreState"}
    enums["t.CoreState"] = core_state
    gtkw = waves.write_gtkw(vcd, toplevel="soc", decoder=EnumDecoder(None, enums))
    # The Yosys name GTKWave cannot load is repaired in place, the file keeps its size.
    assert vcd.stat().st_size == size
    assert "$auto$verilog_backend.cc_2355_dump_module$1" in vcd.read_text()
    text = gtkw.read_text()
    groups = _group_members(text)
    filters = {t: Path(f).name for t, f in _trace_filters(text).items()}
    assert filters["soc.vmx_mode[1:0]"] == "VmxMode.txt"
    assert filters["soc.vm_exit_reason[15:0]"] == "ExitReason.txt"
    assert filters["soc.core.state[4:0]"] == "CoreState.txt"
    assert filters["soc.vmx.\\instr__payload.op[3:0]"] == "VmxOp.txt"
    assert groups["core"] == ["soc.core.mem_req__valid", "soc.core.state[4:0]"]
    assert "soc.vmx.instr__valid" in groups["vmx"]
    assert groups["cache"] == ["soc.vmx.cache.rd__en"]
    assert "soc.vmx.cache.rd__en" in groups["vmx"]   # nested inside its parent block
    assert not any("$" in t for ts in groups.values() for t in ts)


# ---------------------------------------------------------------------------------------------
# make waves


def _make_waves(build_root: Path, extra_env=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env.update({"VTX_BUILD_ROOT": str(build_root), "VTX_GTKWAVE": "", **(extra_env or {})})
    # -o: never reinstall the venv from inside a test.
    return subprocess.run(["make", "-s", "-o", ".venv/.installed", "waves"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_waves_without_gtkwave_prints_the_files(tmp_path, monkeypatch):
    # The suite points the pointer into its own directory (tests/conftest.py); here it is the
    # one in the (temporary) build root, as for a user.
    monkeypatch.delenv(waves.LAST_ENV, raising=False)
    old = tmp_path / "waves" / "a" / "old.vcd"
    new = tmp_path / "waves" / "b" / "new.vcd"
    for path in (old, new):
        path.parent.mkdir(parents=True)
        path.write_text(_VCD)
    os.utime(old, (1, 1))
    # No pointer: the newest VCD; its .gtkw is written when missing.
    proc = _make_waves(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(new) in proc.stdout and str(new.with_suffix(".gtkw")) in proc.stdout
    assert "gtkwave is not installed" in proc.stdout
    assert new.with_suffix(".gtkw").is_file()
    # build/waves/LAST names the run to open (what `vtx run --waves` records).
    pointer = waves.record_last(old, tmp_path)
    assert pointer == tmp_path / "waves" / "LAST"
    proc = _make_waves(tmp_path)
    assert proc.returncode == 0 and str(old) in proc.stdout and "named by" in proc.stdout
    # A stale pointer falls back to the newest, and says so.
    old.unlink()
    proc = _make_waves(tmp_path)
    assert proc.returncode == 0 and str(new) in proc.stdout and "does not exist" in proc.stdout


def test_open_waves_with_nothing_to_open(tmp_path, capsys):
    assert waves.open_waves(build_root=tmp_path) == 1
    assert "no VCD" in capsys.readouterr().out


def test_cli_gtkw_subcommand(tmp_path, capsys):
    vcd = tmp_path / "soc.vcd"
    vcd.write_text(_VCD)
    assert waves.main(["gtkw", str(vcd), "--toplevel", "soc"]) == 0
    assert Path(capsys.readouterr().out.strip()) == vcd.with_suffix(".gtkw")
    assert (tmp_path / "filters" / "VmxMode.txt").is_file()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
