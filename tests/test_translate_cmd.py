"""Tests of `vtx translate` (sim/translate/, sim/translate/testbench.py).

* every example of examples/ through the reference model (``--model``), the RTL in Amaranth's
  simulator (``--sim amaranth``) and the Verilated RTL (the default): the spec's output lines,
  the outcomes noted in examples/make_examples.py, and the backends agreeing on every field but
  ``cycles`` / ``mem_refs`` (which only the RTL runs have: cycles > 0, mem_refs <= 24);
* bad input exits with status 2, names the field, prints nothing on stdout and builds nothing;
* ``--waves`` writes a VCD and a GTKWave save file;
* a disagreement between the RTL and the model is exit status 1 (with a doctored RTL result).

All Verilator runs use one cached model (sim.flow builds it once, on first use). The Verilator
``--waves`` test needs a second, tracing, model: it runs with ``WAVES=1`` or
``VTX_TEST_VERILATOR_WAVES=1`` in the environment (``--waves`` is always tested on Amaranth).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtl.arch import Access, Outcome, PageSize
import sim.translate as translate_cmd
from sim.cli import main as vtx_main
from sim.translate.scenario import (
    ScenarioError,
    format_output_lines,
    load_scenario,
    parse_scenario,
    run_reference,
)
from tb.model.translation import Request, Result

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from make_examples import EXPECTED  # noqa: E402

EXAMPLE_NAMES = sorted(EXPECTED)
MAX_REFS = 24  # the spec's uncached worst case


def vtx(*args: str, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`vtx` as a user runs it (the console script's code, in a fresh interpreter)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=REPO_ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def parse_output(stdout: str) -> tuple[list[dict], list]:
    """The request objects and the memory_after list of `vtx translate` output."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines, "no output"
    assert list(lines[-1]) == ["memory_after"], lines[-1]
    return lines[:-1], lines[-1]["memory_after"]


def architectural(obj: dict) -> dict:
    """An output object without the RTL-only fields."""
    return {k: v for k, v in obj.items() if k not in ("cycles", "mem_refs")}


def model_output(name: str) -> list[str]:
    results, after = run_reference(load_scenario(EXAMPLES / name))
    return format_output_lines(results, after)


# ---------------------------------------------------------------------------------------------
# The examples


def test_examples_are_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == EXAMPLE_NAMES


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_model(name):
    proc = vtx("translate", "--model", str(EXAMPLES / name))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == model_output(name)
    objs, _ = parse_output(proc.stdout)
    assert [o["outcome"] for o in objs] == EXPECTED[name]
    assert [o["index"] for o in objs] == list(range(len(objs)))
    assert "MAXPHYADDR=40" in proc.stderr.splitlines()[0]
    for o in objs:
        assert "cycles" not in o
        if o["outcome"] == "ok":
            assert 0 < o["mem_refs"] <= MAX_REFS


def check_rtl_output(name: str, proc: subprocess.CompletedProcess, backend: str) -> None:
    assert proc.returncode == 0, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"vtx translate: MAXPHYADDR=40, {backend}"), proc.stderr
    assert "agree" in proc.stderr.splitlines()[-1]
    objs, after = parse_output(proc.stdout)
    model_objs, model_after = parse_output("\n".join(model_output(name)))
    assert [o["outcome"] for o in objs] == EXPECTED[name]
    assert [architectural(o) for o in objs] == [architectural(o) for o in model_objs]
    assert after == model_after
    for o, m in zip(objs, model_objs):
        if o["outcome"] != "ok":
            assert o == m
            continue
        assert list(o) == ["index", "outcome", "gpa", "hpa", "cycles", "mem_refs"], o
        if o["outcome"] == "ok":
            assert isinstance(o["cycles"], int) and o["cycles"] > 0, o
            assert 0 <= o["mem_refs"] <= min(MAX_REFS, m["mem_refs"]), (o, m)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_amaranth(name):
    check_rtl_output(name, vtx("translate", "--sim", "amaranth", str(EXAMPLES / name)),
                     "amaranth")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_verilator(name):
    check_rtl_output(name, vtx("translate", str(EXAMPLES / name)), "verilator")


def test_latency_changes_cycles_only():
    """A slower memory: the same answers, more cycles for the walks."""
    name = "ept_violation_write.json"
    fast = vtx("translate", "--sim", "amaranth", "--latency", "2", str(EXAMPLES / name))
    slow = vtx("translate", "--sim", "amaranth", "--latency", "40", str(EXAMPLES / name))
    check_rtl_output(name, fast, "amaranth")
    check_rtl_output(name, slow, "amaranth")
    fast_objs, _ = parse_output(fast.stdout)
    slow_objs, _ = parse_output(slow.stdout)
    assert fast_objs[0]["cycles"] < slow_objs[0]["cycles"]


# ---------------------------------------------------------------------------------------------
# Bad input


def _scenario(**changes) -> dict:
    doc = json.loads((EXAMPLES / "ept_violation_write.json").read_text())
    doc.update(changes)
    return doc


def _bad_inputs() -> list[tuple[str, str, str]]:
    """(id, file text, text the message must contain)."""
    ok = _scenario()
    misaligned = _scenario(memory=[["0x100004", "0x1"], *ok["memory"][1:]])
    unknown_access = _scenario(requests=[{"gla": "0x1000", "access": "exec", "cpl": 0}])
    bad_memtype = _scenario(eptp="0x10001d")      # memory type 5
    five_level = _scenario(eptp="0x100026")       # bits 5:3 = 4: a 5-level walk
    bad_gla = _scenario(requests=[{"gla": "0x1g", "access": "read", "cpl": 0}])
    return [
        ("malformed-json", '{"ept": true, "eptp": ', "invalid JSON"),
        ("misaligned", json.dumps(misaligned), "memory[0][0]"),
        ("unknown-access", json.dumps(unknown_access), "requests[0].access"),
        ("bad-eptp-memtype", json.dumps(bad_memtype), "eptp"),
        ("eptp-not-4-level", json.dumps(five_level), "eptp"),
        ("bad-number", json.dumps(bad_gla), "requests[0].gla"),
        ("not-an-object", "[]", "scenario"),
    ]


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("backend", [[], ["--sim", "amaranth"], ["--model"]],
                         ids=["verilator", "amaranth", "model"])
@pytest.mark.parametrize("text,field", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(tmp_path, capsys, monkeypatch, text, field, backend):
    path = tmp_path / "bad.json"
    path.write_text(text)
    build_root = tmp_path / "build"
    monkeypatch.setenv("VTX_BUILD_ROOT", str(build_root))
    assert vtx_main(["translate", *backend, str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"vtx translate: {field}"), err
    assert len(err.splitlines()) == 1, err
    assert not build_root.exists()  # nothing generated, built or run


def test_bad_input_messages():
    """The messages say what is wrong, not only where."""
    messages = {}
    for ident, text, _field in BAD_INPUTS:
        with pytest.raises(ScenarioError) as info:
            parse_scenario(text)
        messages[ident] = str(info.value)
    assert "not 8-byte aligned" in messages["misaligned"]
    assert "'exec'" in messages["unknown-access"]
    assert "memory type" in messages["bad-eptp-memtype"]
    assert "4 levels" in messages["eptp-not-4-level"]


def test_bad_input_exit_status_from_the_command(tmp_path):
    """The real process: status 2, message on stderr, empty stdout, no build."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_scenario(eptp="0x10001e", requests=[
        {"gla": "0x1000", "access": "read", "cpl": 0},
        {"gla": "0x1000", "access": "execute", "cpl": 0}])))
    build_root = tmp_path / "build"
    proc = vtx("translate", str(path), env={"VTX_BUILD_ROOT": str(build_root)})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("vtx translate: requests[1].access: unknown access type")
    assert not build_root.exists()


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert vtx_main(["translate", "--sim", "amaranth", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert str(missing) in err and "cannot read" in err


@pytest.mark.parametrize("args", [["--model", "--sim", "amaranth"], ["--model", "--waves", "x.vcd"],
                                  ["--waves", "x.gtkw"]])
def test_bad_option_combinations(capsys, args):
    assert vtx_main(["translate", *args, str(EXAMPLES / EXAMPLE_NAMES[0])]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("vtx translate: --")


@pytest.mark.parametrize("latency", ["0", "-3", "x", "256"])
def test_bad_latency(capsys, latency):
    with pytest.raises(SystemExit) as info:
        vtx_main(["translate", "--latency", latency, str(EXAMPLES / EXAMPLE_NAMES[0])])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "--latency" in err


def test_help_documents_stderr_and_exit_status(capsys):
    with pytest.raises(SystemExit):
        vtx_main(["translate", "--help"])
    out = capsys.readouterr().out
    for text in ("MAXPHYADDR", "stderr", "exit status", "--waves", "--latency", "--model"):
        assert text in out


# ---------------------------------------------------------------------------------------------
# Waves


def _check_waves(vcd: Path, proc: subprocess.CompletedProcess) -> None:
    from sim.waves import read_vcd_vars

    assert proc.returncode == 0, proc.stderr
    gtkw = vcd.with_suffix(".gtkw")
    assert vcd.is_file() and gtkw.is_file()
    assert f"waves: {vcd}" in proc.stderr and str(gtkw) in proc.stderr
    names = {v.name for v in read_vcd_vars(vcd)}
    assert {"clk", "req__valid", "resp__payload", "mem_req__valid"} <= names
    text = gtkw.read_text()
    assert f'[dumpfile] "{vcd}"' in text
    assert "req__valid" in text and "mem_resp__payload" in text
    objs, _ = parse_output(proc.stdout)
    assert [o["outcome"] for o in objs] == EXPECTED["ept_misconfig.json"]


def test_waves_amaranth(tmp_path):
    vcd = tmp_path / "sub" / "run.vcd"
    proc = vtx("translate", "--sim", "amaranth", "--waves", str(vcd),
               str(EXAMPLES / "ept_misconfig.json"))
    _check_waves(vcd, proc)


@pytest.mark.skipif(not (os.environ.get("VTX_TEST_VERILATOR_WAVES") == "1"
                         or os.environ.get("WAVES") == "1"),
                    reason="needs a second (tracing) Verilator model: set "
                           "VTX_TEST_VERILATOR_WAVES=1 or WAVES=1")
def test_waves_verilator(tmp_path):
    vcd = tmp_path / "run.vcd"
    proc = vtx("translate", "--waves", str(vcd), str(EXAMPLES / "ept_misconfig.json"))
    _check_waves(vcd, proc)


# ---------------------------------------------------------------------------------------------
# The check against the model, and progress


def test_disagreement_is_exit_status_1(monkeypatch, capsys):
    """A wrong RTL answer: the RTL's line on stdout, the mismatch on stderr, status 1."""
    real = translate_cmd.run_amaranth_backend

    def doctored(scenario, latency, waves, progress):
        records, memory = real(scenario, latency, waves, progress)
        records[1]["qualification"] ^= 1 << 8     # the "final translation" bit
        return records, memory

    monkeypatch.setattr(translate_cmd, "run_amaranth_backend", doctored)
    status = vtx_main(["translate", "--sim", "amaranth",
                       str(EXAMPLES / "ept_violation_write.json")])
    out, err = capsys.readouterr()
    assert status == 1
    objs, _ = parse_output(out)
    assert objs[1]["qualification"] == "0x8a"
    assert "MISMATCH: request 1 (write gla 0x555500003080 cpl 0)" in err
    assert "on qualification" in err
    assert "RTL:   outcome=ept_violation" in err and "qualification=0x18a" in err


def test_compare_reports_memory_and_fields():
    ok = Result(Outcome.OK, 0x1000, gpa=0x2000, hpa=0x3000, page_size=PageSize.SIZE_4K)
    wrong = Result(Outcome.OK, 0x1000, gpa=0x2000, hpa=0x4000, page_size=PageSize.SIZE_4K)
    req = [Request(0x1000, Access.READ, 0)]
    assert translate_cmd.compare(req, [ok], [ok], [(8, 0x20)], [(8, 0x20)]) == []
    problems = translate_cmd.compare(req, [ok], [wrong], [(8, 0x20)], [(8, 0x20), (16, 1)])
    assert len(problems) == 2
    assert "on hpa" in problems[0]
    assert "0x10: RTL 0x1, model unchanged" in problems[1]


def test_progress(capsys):
    progress = translate_cmd.Progress(10, interval=0.0)
    list(progress.counting(range(10)))
    err = capsys.readouterr().err.splitlines()
    assert err and err[-1].startswith("vtx translate: 9/10 requests")
