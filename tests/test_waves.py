"""Waveforms: translate filters from the RTL's enums, .gtkw grouping by block, `make waves`.

sim/gtkw_filters.py makes one GTKWave translate filter file per enum of the RTL and finds which
VCD variable carries which enum (the generated Verilog's enum attributes first, name rules for
plain vectors); sim/waves.py writes the .gtkw that attaches them and groups the signals by block.
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
import subprocess
import sys
from pathlib import Path

import cocotb
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from rtl.arch.paging import Outcome, PageSize
from rtl.arch.vmx import ExitReason, VmInstructionError, VmxMode, VmxOp
from rtl.translation.walker import WalkState
from sim import gtkw_filters, waves
from sim.gtkw_filters import EnumDecoder, EnumTable, rtl_enums, write_filter_files

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


class WavesDemo(wiring.Component):
    go: In(1)
    mode: Out(VmxMode)
    resp: Out(RESP_LAYOUT)
    vm_exit_reason: Out(16)
    done: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.stepper = stepper = _Stepper()
        m.d.comb += [stepper.go.eq(self.go), self.done.eq(stepper.done)]
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
def demo_run(tests_dir):
    from sim import flow

    result = flow.simulate(WavesDemo, TOPLEVEL, {}, "test_waves", testcase="run_demo",
                           waves=True, test_dirs=[tests_dir],
                           # One run directory per pytest-xdist worker: each worker sets up this
                           # module fixture itself, and a shared directory is wiped under the
                           # other's running simulation.
                           run_name="test_waves-demo-"
                                    + os.environ.get("PYTEST_XDIST_WORKER", "main"))
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


def test_render_png_draws_the_decoded_run(demo_run, tmp_path):
    pytest.importorskip("matplotlib")
    result, _ = demo_run
    png = waves.render_png(result.vcd, tmp_path / "w.png", result.gtkw,
                           [f"{TOPLEVEL}.stepper.*", f"{TOPLEVEL}.mode"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(shutil.which("gtkwave") is None or shutil.which("xvfb-run") is None,
                    reason="GTKWave and Xvfb are optional (apt-get install gtkwave xvfb xauth)")
def test_gtkwave_itself_knows_every_trace(demo_run, tmp_path):
    """Where GTKWave is installed: it loads the dump and has a facility for every trace."""
    result, _ = demo_run
    names = tmp_path / "facs.txt"
    script = tmp_path / "names.tcl"
    script.write_text(
        f'set f [open "{names}" w]\n'
        "for {set i 0} {$i < [gtkwave::getNumFacs]} {incr i} "
        "{ puts $f [gtkwave::getFacName $i] }\n"
        "close $f\ngtkwave::/File/Quit\n")
    subprocess.run(["xvfb-run", "-a", "gtkwave", "-S", str(script), str(result.gtkw)],
                   capture_output=True, timeout=120)
    facilities = set(names.read_text().splitlines())
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
def test_make_waves_without_gtkwave_prints_the_files(tmp_path):
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
