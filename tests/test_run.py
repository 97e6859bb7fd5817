"""Tests of `vtx run` (sim/run/, its C++-driven Verilator model sim/run/model.py with
sim/run/model.cpp and sim/run/top.py) and its loader (sim/run/program.py).

* the loader, without simulation: assembly and linking (entry point, sections, .bss), flat
  binaries, the boot page tables and RAM image (hand-written expected words), the boot state,
  --dump ranges, and every bad input as `SystemImageError`;
* the JSON and the live output of `vtx run`, from hand-made raw results (`result_json`,
  `Printer`);
* the command line: bad input exits 2 with one message on stderr and nothing on stdout, before
  anything is built;
* the model's job and its bad input (`run_model.job_text`, the harness's exit status 2);
* the example programs of examples/programs/ on the Verilated SoC (`sim.run.top.SocRunTop`,
  default parameters: ONE model for every test here, built once and cached): console, exit
  kinds and codes, registers the programs compute, counters, --dump against the assembled
  image, --trace, --max-cycles, --max-instructions, the console's bytes recovered exactly from
  the JSON, the console streaming while the simulation runs, the status line on a terminal;
* the smallest program on Amaranth's simulator (``--sim amaranth``, with ``--waves``), and
  --max-instructions there too.

The Verilator ``--waves`` test needs a second (tracing) model: it runs with ``WAVES=1`` or
``VTX_TEST_VERILATOR_WAVES=1`` in the environment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtl.arch.paging import PTE_A, PTE_D, PTE_P, PTE_PS, PTE_RW
from rtl.arch.system import (
    BOOT_PDPT,
    BOOT_PML4,
    BOOT_RFLAGS,
    BOOT_STACK_TOP,
    PROGRAM_BASE,
    RAM_BYTES,
)
from rtl.arch.vmx import INVALID_VMCS_POINTER, ExitReason, VmxMode
from sim import run as vtx_run
from sim.run.program import (
    SystemImageError,
    assemble,
    boot_image,
    boot_state,
    load_program,
    page_tables,
    parse_dump,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = REPO_ROOT / "examples" / "programs"
HELLO, HALT, FAULT, EXIT_CODE = (PROGRAMS / f"{n}.S" for n in ("hello", "halt", "fault",
                                                                "exit_code"))


def vtx(*args: str, env: dict | None = None, timeout: float = 3600,
        text: bool = True) -> subprocess.CompletedProcess:
    """`vtx` as a user runs it (the console script's code, in a fresh interpreter); its output
    as bytes unless `text`."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=REPO_ROOT,
                          env=full_env, capture_output=True, text=text, timeout=timeout)


def run_json(*args: str) -> dict:
    proc = vtx("run", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# The loader


def test_assemble_hello():
    image, entry = assemble(HELLO)
    program = load_program(HELLO)
    assert (image, entry) == (program.image, program.entry)
    assert entry == program.symbols["_start"] == PROGRAM_BASE
    # lea message(%rip), %rsi: 48 8d 35 disp32, then call rel32
    assert image[:3] == bytes.fromhex("488d35")
    assert program.image.endswith(b"Hello, world!\n\0")       # .rodata follows .text
    assert program.disassembly[PROGRAM_BASE].startswith("lea")
    assert program.kind == "assembly"


def test_entry_point_is_start_else_base(tmp_path):
    with_start = write(tmp_path, "a.S", ".text\nnop\nnop\n.globl _start\n_start: hlt\n")
    local_start = write(tmp_path, "b.S", ".text\nnop\n_start: hlt\n")
    without = write(tmp_path, "c.S", ".text\nnop\nhlt\n")
    assert load_program(with_start).entry == PROGRAM_BASE + 2
    assert load_program(local_start).entry == PROGRAM_BASE + 1
    assert load_program(without).entry == PROGRAM_BASE


def test_sections_are_laid_out_from_the_base(tmp_path):
    src = write(tmp_path, "s.S", """
        .text
        .globl _start
    _start: mov value(%rip), %rax
        hlt
        .data
    value: .quad 0x1122334455667788
        .bss
    buf: .skip 4096
    """)
    program = load_program(src)
    value = program.symbols["value"]
    assert program.image[value - PROGRAM_BASE:][:8] == (0x1122334455667788).to_bytes(8, "little")
    assert program.symbols["buf"] >= value + 8
    # .bss is not in the image but counts for the extent
    assert program.end >= program.symbols["buf"] + 4096 > PROGRAM_BASE + len(program.image)


def test_include_from_the_program_directory(tmp_path):
    write(tmp_path, "consts.inc", ".set ANSWER, 42\n")
    src = write(tmp_path, "inc.S", '.include "consts.inc"\n.text\nmov $ANSWER, %eax\nhlt\n')
    assert load_program(src).image == bytes.fromhex("b82a000000f4")


def test_flat_binary(tmp_path):
    raw = bytes.fromhex("b803000000e7f4")          # mov $3,%eax; out %eax,$0xf4
    path = tmp_path / "prog.bin"
    path.write_bytes(raw)
    program = load_program(path)
    assert (program.image, program.entry, program.kind) == (raw, PROGRAM_BASE, "binary")
    assert program.end == PROGRAM_BASE + len(raw)
    assert program.disassembly[PROGRAM_BASE] == "mov $0x3,%eax"


def test_page_tables_identity_map_4g():
    one_g = 1 << 30
    assert page_tables() == {
        0x1000 // 8: 0x2000 | 0x3,               # PML4[0] -> PDPT, P|RW
        0x2000 // 8: 0 * one_g | 0x83,           # PDPT[0..3]: 1 GiB pages, P|RW|PS
        0x2000 // 8 + 1: 1 * one_g | 0x83,
        0x2000 // 8 + 2: 2 * one_g | 0x83,
        0x2000 // 8 + 3: 3 * one_g | 0x83,
    }
    # the same from the constants
    assert page_tables()[BOOT_PML4 // 8] == BOOT_PDPT | PTE_P | PTE_RW
    assert page_tables()[BOOT_PDPT // 8 + 3] == (3 << 30) | PTE_P | PTE_RW | PTE_PS


def test_boot_image_words():
    image = bytes(range(1, 12))                   # 11 bytes: one full qword and a partial one
    words = boot_image(image)
    assert {k: v for k, v in words.items() if k in page_tables()} == page_tables()
    assert words[PROGRAM_BASE // 8] == 0x0807060504030201
    assert words[PROGRAM_BASE // 8 + 1] == 0x0B0A09
    assert len(words) == len(page_tables()) + 2


def test_boot_state():
    program = load_program(HALT)
    assert boot_state(program) == {"init_rip": PROGRAM_BASE, "init_rsp": BOOT_STACK_TOP,
                                   "init_cr3": BOOT_PML4}


def test_parse_dump():
    assert parse_dump("0x100000:16") == (0x100000, 16)
    assert parse_dump("4096:0x10") == (4096, 16)
    assert parse_dump(f"{RAM_BYTES - 8}:8") == (RAM_BYTES - 8, 8)
    for bad, words in [(f"{RAM_BYTES - 8}:9", "outside RAM"), (f"{RAM_BYTES:#x}:1", "outside RAM"),
                       ("0x100000", "ADDR:LEN"), ("zz:4", "not an integer"),
                       ("0x10:0", "LEN > 0"), ("-8:8", ">= 0")]:
        with pytest.raises(SystemImageError, match=words):
            parse_dump(bad)
    assert parse_dump("0x1000:8", ram_bytes=0x2000) == (0x1000, 8)
    with pytest.raises(SystemImageError, match="outside RAM"):
        parse_dump("0x2000:8", ram_bytes=0x2000)


def test_bad_programs(tmp_path):
    with pytest.raises(SystemImageError, match="no such file"):
        load_program(tmp_path / "missing.S")
    bad = write(tmp_path, "bad.S", ".text\nmov %rax\nfrobnicate %rbx\n")
    with pytest.raises(SystemImageError) as info:
        load_program(bad)
    message = str(info.value)
    assert "does not assemble" in message
    assert "bad.S:2: Error:" in message and "frobnicate" in message     # the assembler's words
    big_bss = write(tmp_path, "bss.S", f".text\nhlt\n.bss\n.skip {RAM_BYTES}\n")
    with pytest.raises(SystemImageError, match="does not fit in RAM"):
        load_program(big_bss)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x90" * (RAM_BYTES - PROGRAM_BASE + 1))
    with pytest.raises(SystemImageError, match="does not fit in RAM"):
        load_program(big, disassemble=False)
    assert load_program(big, ram_bytes=RAM_BYTES + 8, disassemble=False).end == RAM_BYTES + 1
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(SystemImageError, match="empty"):
        load_program(empty)
    undefined = write(tmp_path, "undef.S", ".text\ncall nowhere\n")
    with pytest.raises(SystemImageError, match="does not link"):
        load_program(undefined)


# ---------------------------------------------------------------------------------------------
# Results and live output (no simulation)


def raw_results(**over) -> dict:
    raw = {
        "stop": 0, "exit_code": 0,
        "fault": {"vector": 0, "has_error_code": 0, "error_code": 0, "rip": 0, "addr": 0},
        "gpr": list(range(100, 116)), "rip": 0x100010, "rflags": 0x46, "cr0": 1, "cr3": 0x1000,
        "cr4": 0x20, "efer": 0x500, "vmx_mode": 0, "current_vmcs": INVALID_VMCS_POINTER,
        "cycles": 1000, "instructions": 50, "running": 0, "cycle_limit": False,
        "vm_exits": {}, "vm_entries": 0, "vm_entry_failures": {}, "console": b"hi\n".hex(),
        "memory": [],
    }
    raw.update(over)
    return raw


def test_result_json_exit_kinds():
    out = vtx_run.result_json(raw_results(stop=1, exit_code=7))
    assert out["exit"] == {"kind": "exit_port", "code": 7}
    assert vtx_run.result_json(raw_results(stop=2))["exit"] == {"kind": "hlt"}
    fault = {"vector": 14, "has_error_code": 1, "error_code": 2, "rip": 0x100005, "addr": 0x1234}
    assert vtx_run.result_json(raw_results(stop=3, fault=fault))["exit"] == {
        "kind": "fault", "vector": 14, "name": "#PF", "error_code": 2, "rip": 0x100005,
        "addr": 0x1234}
    fault = {"vector": 6, "has_error_code": 0, "error_code": 0, "rip": 0x100000, "addr": 0}
    assert vtx_run.result_json(raw_results(stop=3, fault=fault))["exit"]["error_code"] is None
    assert vtx_run.result_json(raw_results(cycle_limit=True, running=1))["exit"] == {
        "kind": "cycle_limit"}
    assert vtx_run.result_json(raw_results(instruction_limit=True, running=1))["exit"] == {
        "kind": "instruction_limit"}


def test_result_json_fields():
    out = vtx_run.result_json(raw_results(
        vmx_mode=VmxMode.NON_ROOT.value, current_vmcs=0x5000, vm_entries=3,
        vm_exits={ExitReason.CPUID.value: 2, ExitReason.VMCALL.value: 1, 1000: 1},
        memory=[[0x100000, 2, "b803"]], console=b"ok\xff".hex()))
    assert out["regs"]["rax"] == 100 and out["regs"]["rcx"] == 101
    assert out["regs"]["rsp"] == 104 and out["regs"]["r15"] == 115
    assert (out["regs"]["rip"], out["regs"]["rflags"]) == (0x100010, 0x46)
    assert list(out["regs"]) == [*vtx_run.GPR_NAMES, "rip", "rflags"]
    assert (out["cr0"], out["cr3"], out["cr4"], out["efer"]) == (1, 0x1000, 0x20, 0x500)
    assert out["vmx"] == {"mode": "non_root", "current_vmcs": 0x5000}
    assert out["vm_exits"] == {"CPUID": 2, "VMCALL": 1, "UNKNOWN_1000": 1}
    assert out["vm_entries"] == 3
    assert out["console"] == "ok\ufffd"
    assert base64.b64decode(out["console_base64"]) == b"ok\xff"
    assert out["memory"] == [{"addr": 0x100000, "length": 2, "hex": "b803"}]
    assert (out["cycles"], out["instructions"]) == (1000, 50)
    off = vtx_run.result_json(raw_results())
    assert off["vmx"] == {"mode": "off", "current_vmcs": None}
    assert "memory" not in off
    json.dumps(off)


class _Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, data):
        self.data += data.encode() if isinstance(data, str) else data

    def flush(self):
        pass


def test_printer_events():
    console, trace = _Sink(), _Sink()
    printer = vtx_run.Printer(console, trace, trace=True, disassembly={0x100000: "nop"})
    for line in ["C 48 5", "T 12 100000 1 90", "C 69 15", "E 20", "X 30 10",
                 "T 40 100001 2 0f0b", "C 0a 45", "C 21 50"]:
        printer.event_line(line)
    assert bytes(printer.console_bytes) == b"Hi\n!"
    assert bytes(console.data) == b"Hi\n!"            # not line-buffered: every byte at once
    lines = trace.data.decode().splitlines()
    assert len(lines) == 8
    assert lines[0].split()[1:] == ["5", "console", "0x48", "'H'"]
    assert "0x100000" in lines[1] and " 90 " in lines[1] + " " and lines[1].endswith("nop")
    assert lines[3].split()[1:] == ["20", "VM", "entry"]
    assert "VM exit: CPUID (10)" in lines[4]
    assert "0x100001" in lines[5] and "0f 0b" in lines[5]
    quiet = vtx_run.Printer(console, trace, trace=False, disassembly={})
    quiet.event_line("T 1 100000 1 90")
    quiet.event_line("X 2 10")
    quiet.event_line("C 41 3")
    assert len(trace.data.decode().splitlines()) == 8
    assert bytes(console.data) == b"Hi\n!A"


def test_printer_line_buffered():
    console = _Sink()
    printer = vtx_run.Printer(console, None, trace=False, disassembly={}, line_buffered=True)
    for byte in b"ab\ncd":
        printer.console_byte(byte)
    assert bytes(console.data) == b"ab\n"
    printer.finish()
    assert bytes(console.data) == b"ab\ncd"
    silent = vtx_run.Printer(None, None, trace=False, disassembly={})
    silent.console_byte(0x41)
    assert bytes(silent.console_bytes) == b"A"


def test_printer_counts_vm_entries_and_exits():
    printer = vtx_run.Printer(None, None, trace=False, disassembly={})
    for line in ["E 10", "X 20 10", "E 30", "X 40 30", "X 50 10"]:
        printer.event_line(line)
    assert printer.vm_entries == 2
    assert printer.vm_exits == {ExitReason.CPUID.value: 2, ExitReason.IO_INSTRUCTION.value: 1}


def test_printer_reports_vm_entry_failures():
    """An ``F`` event is a VM-entry failure: counted apart from the exits, traced with the full
    exit reason (bit 31 set) and what its qualification means."""
    trace = _Sink()
    printer = vtx_run.Printer(None, trace, trace=True, disassembly={})
    for line in ["F 10 33 4", "X 20 10", "F 30 33 0"]:
        printer.event_line(line)
    assert printer.vm_entry_failures == {ExitReason.INVALID_GUEST_STATE.value: 2}
    assert printer.vm_exits == {ExitReason.CPUID.value: 1}
    lines = trace.data.decode().splitlines()
    assert lines[0].split()[1] == "10"
    assert lines[0].endswith("VM-entry failure: INVALID_GUEST_STATE (0x80000021), "
                             "qualification 4 (VMCS link pointer)")
    assert lines[2].endswith("qualification 0 (guest state)")
    raw = raw_results(vm_exits=printer.vm_exits, vm_entry_failures=printer.vm_entry_failures)
    out = vtx_run.result_json(raw)
    assert out["vm_entry_failures"] == {"INVALID_GUEST_STATE": 2}
    assert out["vm_exits"] == {"CPUID": 1}
    assert "1 VM exits, 2 VM-entry failures" in vtx_run.summary(out, 1.0)


def test_printer_status_line():
    """Progress events make one status line on the terminal, rewritten in place and erased
    before the console prints and at the end; none while the console is mid-line."""
    console, status = _Sink(), _Sink()
    printer = vtx_run.Printer(console, status, trace=False, disassembly={}, status=status)
    printer.event_line("P 1000000 200000 3 2.000")
    shown = status.data.decode()
    assert shown.startswith("\r\x1b[K") and "\n" not in shown
    assert "1,000,000 cycles" in shown and "200,000 instructions" in shown
    assert "500 k cycles/s" in shown and "3 VM exits" in shown
    printer.event_line("P 3000000 400000 3 4.000")          # the speed since the last line
    assert "1,000 k cycles/s" in status.data.decode().rsplit("\r\x1b[K", 1)[1]
    status.data.clear()
    printer.event_line("C 41 5")                             # console: status erased first
    assert status.data == b"\r\x1b[K" and console.data == b"A"
    status.data.clear()
    printer.event_line("P 5000000 500000 3 6.000")           # "A" has no newline yet: no status
    assert status.data == b""
    printer.event_line("C 0a 6")
    printer.event_line("P 7000000 600000 3 8.000")
    assert b"7,000,000 cycles" in status.data
    status.data.clear()
    printer.finish()
    assert status.data == b"\r\x1b[K"
    silent = vtx_run.Printer(console, status, trace=False, disassembly={})   # not a terminal
    status.data.clear()
    silent.event_line("P 1000000 200000 3 2.000")
    assert status.data == b""


def console_bytes(out: dict) -> bytes:
    """The console's bytes from a ``--json`` object, by the rule docs/system.md gives."""
    if out["console_base64"] is not None:
        return base64.b64decode(out["console_base64"], validate=True)
    return out["console"].encode("utf-8")


#: Consoles of every kind: empty, ASCII, other UTF-8, a NUL, invalid UTF-8 (a lone continuation
#: byte, 0xFF, a truncated sequence), and the text of an escape next to the byte it escapes.
CONSOLES = [b"", b"hi\n", "h\u00e9llo \u2713\n".encode(), b"a\0b", b"\x84", b"ok\xff\n",
            b"\xe2\x9c", b"\\x84", b"\\x84\x84", "\ufffd".encode()]


@pytest.mark.parametrize("data", CONSOLES)
def test_json_console_gives_the_exact_bytes(data):
    out = json.loads(json.dumps(vtx_run.result_json(raw_results(console=data.hex()))))
    assert console_bytes(out) == data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        assert out["console_base64"] is not None
        assert out["console"] == data.decode("utf-8", errors="replace")
    else:
        assert (out["console"], out["console_base64"]) == (text, None)


def test_json_console_escape_text_is_not_the_byte():
    """A program that prints backslash, x, 8, 4 and one that prints the byte 0x84 give JSON
    objects that tell them apart (the console used to render 0x84 as the text ``\\x84``)."""
    printed_text = vtx_run.result_json(raw_results(console=b"\\x84".hex()))
    printed_byte = vtx_run.result_json(raw_results(console=b"\x84".hex()))
    assert printed_text["console"] == "\\x84" and printed_text["console_base64"] is None
    assert printed_byte["console"] != printed_text["console"]
    assert printed_byte["console_base64"] == base64.b64encode(b"\x84").decode()


def test_summary_of_the_limits():
    cycles = vtx_run.result_json(raw_results(cycle_limit=True, running=1))
    instructions = vtx_run.result_json(raw_results(instruction_limit=True, running=1,
                                                   instructions=7))
    assert "stopped: cycle limit reached (--max-cycles); 50 instructions" in \
        vtx_run.summary(cycles, 1.0)
    assert "stopped: instruction limit reached (--max-instructions); 7 instructions" in \
        vtx_run.summary(instructions, 1.0)


def test_summary_gives_build_and_run_times():
    result = vtx_run.result_json(raw_results(stop=1))
    assert vtx_run.summary(result, 2.34).endswith("(run 2.3 s)")
    assert vtx_run.summary(result, 2.34, 0.05).endswith("(run 2.3 s)")    # a cached model
    assert vtx_run.summary(result, 2.34, 71.2).endswith("(model build 71.2 s, run 2.3 s)")


def test_model_job_text():
    from sim.run.model import job_text

    program = load_program(HALT)
    lines = job_text(program, RAM_BYTES, 1234, [(0x100000, 8), (BOOT_PML4, 16)], trace=True,
                     waves=None, progress_ms=2000).splitlines()
    assert lines[:4] == ["max_cycles 1234", "trace 1", "progress_ms 2000", "max_instructions 0"]
    assert [line.split()[1] for line in lines if line.startswith("boot ")] == \
        list(boot_state(program))
    words = {int(w[1]): int(w[2], 16) for w in (line.split() for line in lines)
             if w[0] == "word"}
    assert words == {k: v for k, v in boot_image(program).items() if v}
    assert [line for line in lines if line.startswith("dump ")] == \
        ["dump 1048576 8", f"dump {BOOT_PML4} 16"]
    assert not any(line.startswith("waves") for line in lines)
    with_waves = job_text(program, RAM_BYTES, 10, [], trace=False, waves=Path("w.vcd"))
    assert f"waves {Path('w.vcd').resolve()}" in with_waves.splitlines()
    limited = job_text(program, RAM_BYTES, 10, [], trace=False, waves=None, max_instructions=7)
    assert "max_instructions 7" in limited.splitlines()


def test_model_rejects_a_bad_job():
    """The harness checks its job: a bad line is exit status 2 with the line named, and no
    results (`run_model.run` turns that into a `ModelError`)."""
    from sim.run import model as run_model

    model = run_model.build()
    for job, words in [(b"max_cycles 10\nfrobnicate 3\n", "bad job line: frobnicate 3"),
                       (b"trace 1\n", "no max_cycles"),
                       (b"max_cycles 10\nboot init_rax 0x1\n", "unknown boot input init_rax"),
                       (b"max_cycles 1x\n", "bad job line: max_cycles 1x"),
                       (b"max_cycles 10\nmax_instructions -\n",
                        "bad job line: max_instructions -")]:
        proc = subprocess.run([str(model.binary)], input=job, capture_output=True, timeout=60)
        assert proc.returncode == 2, (job, proc.stderr)
        assert words in proc.stderr.decode(), proc.stderr
        assert b"END" not in proc.stdout


# ---------------------------------------------------------------------------------------------
# Bad input on the command line: exit 2, one message, nothing on stdout, nothing built


def _assert_usage_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "vtx run" in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_program_does_not_assemble(tmp_path):
    bad = write(tmp_path, "bad.S", ".text\n_start: movq %rax, %rbx, %rcx\n")
    _assert_usage_error(vtx("run", "--json", str(bad)), "does not assemble", "bad.S:2: Error:")


def test_cli_missing_file(tmp_path):
    _assert_usage_error(vtx("run", str(tmp_path / "nothing.S")), "no such file")


def test_cli_dump_outside_ram():
    _assert_usage_error(vtx("run", "--dump", f"{RAM_BYTES - 4:#x}:8", str(HELLO)),
                        "--dump", "outside RAM")
    _assert_usage_error(vtx("run", "--dump", "0x100000", str(HELLO)), "ADDR:LEN")


def test_cli_empty_program(tmp_path):
    """A program with no code or data at all: named as empty, not with the scratch file that
    objcopy was given."""
    for name, text in [("empty.S", "# nothing\n"), ("blank.S", ""), ("labels.S", "x:\ny:\n")]:
        proc = vtx("run", str(write(tmp_path, name, text)))
        _assert_usage_error(proc, f"{name}: the program is empty")
        assert "prog.elf" not in proc.stderr and "vtx-run-asm-" not in proc.stderr


def test_cli_program_too_big(tmp_path):
    big = write(tmp_path, "big.S", f".text\nhlt\n.bss\n.skip {RAM_BYTES}\n")
    _assert_usage_error(vtx("run", str(big)), "does not fit in RAM")


def test_cli_bad_options(tmp_path):
    for args in (["--max-cycles", "0"], ["--max-cycles", "x"], ["--sim", "iverilog"],
                 ["--ram-bytes", "12"]):
        proc = vtx("run", *args, str(HELLO))
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ""
    _assert_usage_error(vtx("run", "--waves", str(tmp_path / "w.gtkw"), str(HELLO)), "--waves")
    _assert_usage_error(vtx("run", "--waves-ports", str(HELLO)), "--waves-ports")
    _assert_usage_error(vtx("run", "--sim", "amaranth", "--waves", str(tmp_path / "w.vcd"),
                            "--waves-ports", str(HELLO)), "--waves-ports", "Verilator")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", ""])
def test_cli_bad_max_instructions(value):
    proc = vtx("run", "--json", "--max-instructions", value, str(HELLO))
    _assert_usage_error(proc, "--max-instructions", repr(value))
    assert "building" not in proc.stderr


def test_cli_ram_too_big_for_elaboration(tmp_path):
    """A RAM the elaboration cannot hold is refused before anything is built (it used to fail
    after "building the Verilator model" with a MemoryError and no reason)."""
    import time

    start = time.monotonic()
    proc = vtx("run", "--ram-bytes", "0x800000000", str(HELLO))
    _assert_usage_error(proc, "--ram-bytes 0x800000000", "at most 0x40000000")
    assert "building" not in proc.stderr
    assert time.monotonic() - start < 60      # no elaboration: ~64 GB of host memory
    assert vtx_run.RAM_BYTES_MAX == 1 << 30


def test_ports_only_tracing_config():
    """The ports-only trace (`make demo`): the top's scope off, and the declaration lines of the
    untraced ports, found in the top module of the generated Verilog."""
    from sim.run import model as run_model
    from sim.run.model import TOPLEVEL, UNTRACED_PORTS, ports_only_tracing

    verilog = run_model.verilog(RAM_BYTES)
    vlt = ports_only_tracing(verilog)
    assert vlt.parent == verilog.parent and vlt.suffix == ".vlt"
    lines = vlt.read_text().splitlines()
    assert lines[:2] == ["`verilator_config", f'tracing_off -scope "{TOPLEVEL}"']
    source = verilog.read_text().splitlines()
    off = []
    for rule in lines[2:]:
        words = rule.split()
        assert words[:3] == ["tracing_off", "-file", f'"{verilog.resolve()}"'] and \
            words[3] == "-lines", rule
        off.append(source[int(words[4]) - 1])
    # Each untraced port: its `output` declaration and the net or register that drives it.
    for port in UNTRACED_PORTS:
        mine = [text for text in off if text.rstrip(";").split()[-1] == port or
                text.split("=")[0].split()[-1] == port]
        assert any(text.strip().startswith("output") for text in mine), (port, off)
        assert len(mine) == 2, (port, mine)
    assert len(off) == 2 * len(UNTRACED_PORTS)
    assert ports_only_tracing(verilog) == vlt      # the same text: the same file (and model)


def test_cli_registered():
    proc = vtx("--help")
    assert proc.returncode == 0 and " run " in proc.stdout


# ---------------------------------------------------------------------------------------------
# The example programs on the Verilated SoC (one model)


def test_hello_json():
    program = load_program(HELLO)
    out = run_json("--dump", f"{PROGRAM_BASE:#x}:{len(program.image)}", str(HELLO))
    assert out["exit"] == {"kind": "exit_port", "code": 0}
    assert out["console"] == "Hello, world!\n"
    assert out["regs"]["rbx"] == 55                     # 1 + ... + 10
    assert out["regs"]["rax"] == 0 and out["regs"]["rcx"] == 0
    assert out["regs"]["rsp"] == BOOT_STACK_TOP         # CALL/RET and PUSH/POP balanced
    # the loaded image reads back through the debug port, byte for byte
    assert out["memory"] == [{"addr": PROGRAM_BASE, "length": len(program.image),
                              "hex": program.image.hex()}]
    # the boot state: paging over the boot tables, long mode, VMX off
    from rtl.core.core import RESET_CR0, RESET_CR4, RESET_EFER

    assert (out["cr0"], out["cr3"], out["cr4"], out["efer"]) == (
        RESET_CR0, BOOT_PML4, RESET_CR4, RESET_EFER)
    assert out["vmx"] == {"mode": "off", "current_vmcs": None}
    assert out["vm_exits"] == {} and out["vm_entries"] == 0
    # the loop runs 10 times, the string has 14 characters: well over 100 instructions
    assert 100 < out["instructions"] < out["cycles"]


def test_hello_plain_output():
    proc = vtx("run", str(HELLO))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello, world!\n"
    assert "stopped: exit port, code 0" in proc.stderr
    assert "rbx=0000000000000037" in proc.stderr


def test_halt_and_dump():
    program = load_program(HALT)
    result = program.symbols["result"]
    out = run_json("--dump", f"{result:#x}:8", "--dump", f"{BOOT_PML4:#x}:8",
                   "--dump", f"{BOOT_PDPT:#x}:16", str(HALT))
    assert out["exit"] == {"kind": "hlt"}
    assert out["regs"]["rax"] == 0x2A
    assert out["regs"]["rflags"] == BOOT_RFLAGS
    assert out["instructions"] == 3
    assert out["memory"][0] == {"addr": result, "length": 8,
                                "hex": (0x2A).to_bytes(8, "little").hex()}
    # The walker set the accessed flags of the entries it used (PML4[0], PDPT[0]) and the dirty
    # flag of the 1 GiB page the program wrote; PDPT[1] was never used.
    pml4e = int.from_bytes(bytes.fromhex(out["memory"][1]["hex"]), "little")
    assert pml4e == page_tables()[BOOT_PML4 // 8] | PTE_A
    pdpt = bytes.fromhex(out["memory"][2]["hex"])
    assert int.from_bytes(pdpt[:8], "little") == page_tables()[BOOT_PDPT // 8] | PTE_A | PTE_D
    assert int.from_bytes(pdpt[8:], "little") == page_tables()[BOOT_PDPT // 8 + 1]


def test_fault():
    program = load_program(FAULT)
    faulting = next(a for a, text in program.disassembly.items() if text == "mov (%rbx),%rax")
    out = run_json(str(FAULT))
    assert out["exit"] == {"kind": "fault", "vector": 14, "name": "#PF", "error_code": 0,
                           "rip": faulting, "addr": 1 << 32}
    assert out["regs"]["rip"] == faulting               # the faulting instruction did not retire
    assert out["regs"]["rcx"] == 7 and out["regs"]["rbx"] == 1 << 32
    assert out["regs"]["rax"] == 0
    assert out["instructions"] == 2


def test_exit_code_and_status():
    proc = vtx("run", str(EXIT_CODE))
    assert proc.returncode == 0                          # the simulation ran
    assert "exit port, code 3" in proc.stderr
    assert proc.stdout == ""


def test_trace_lists_the_rips():
    program = load_program(HELLO)
    proc = vtx("run", "--trace", str(HELLO))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello, world!\n"
    lines = [line.split() for line in proc.stderr.splitlines() if line.startswith("trace ")]
    trace = [line for line in proc.stderr.splitlines()
             if line.startswith("trace ") and line.split()[2].startswith("0x")]
    rips = [int(line.split()[2], 16) for line in trace]
    # each console byte has a trace line of its own
    assert [int(w[3], 16) for w in lines if w[2] == "console"] == list(b"Hello, world!\n")
    # every instruction of the program runs but the final HLT (the OUT to the exit port before
    # it ends the run, whether or not the SoC counts it as retired)
    executed = {a for a, text in program.disassembly.items() if not text.startswith("hlt")}
    exit_out = next(a for a, text in program.disassembly.items() if text == "out %eax,$0xf4")
    assert executed - set(rips) <= {exit_out}
    assert set(rips) <= executed
    assert rips[0] == program.entry
    # the loop body (add/dec/jne) retires once per iteration, the string loop once per character
    add = next(a for a, text in program.disassembly.items() if text == "add %rcx,%rbx")
    out = next(a for a, text in program.disassembly.items() if text == "out %al,$0xe9")
    assert rips.count(add) == 10 and rips.count(out) == len("Hello, world!\n")
    first = trace[0]
    assert program.image[:7].hex(" ") in first and "lea" in first


def test_cycle_limit():
    spin = PROGRAMS / "hello.S"
    out = run_json("--max-cycles", "60", "--dump", "0x100000:8", str(spin))
    assert out["exit"] == {"kind": "cycle_limit"}
    assert 59 <= out["cycles"] <= 61
    assert out["instructions"] < 10
    # The SoC is paused for the dump (its `pause` input): RAM is read while the run is on.
    assert out["memory"] == [{"addr": 0x100000, "length": 8,
                              "hex": load_program(spin).image[:8].hex()}]


def backend_args(backend: str) -> list[str]:
    """The options of `backend`: Amaranth's simulator gets a small RAM (its elaboration holds
    every RAM row)."""
    return ["--sim", backend, "--ram-bytes", f"{PROGRAM_BASE + 0x10000:#x}"] \
        if backend == "amaranth" else []


#: Stores a value, then spins: a run that only a cycle limit ends, with a store to dump.
SPIN_AFTER_STORE = """\
        .text
        .globl  _start
_start: mov     $0x5eed, %eax
        mov     %rax, result(%rip)
spin:   jmp     spin
        .data
        .balign 8
result: .quad   0
"""


@pytest.mark.parametrize("backend", ["verilator", "amaranth"])
def test_dump_at_the_cycle_limit(tmp_path, backend):
    program = write(tmp_path, "spin.S", SPIN_AFTER_STORE)
    result = load_program(program).symbols["result"]
    out = run_json(*backend_args(backend), "--max-cycles", "600", "--dump", f"{result:#x}:8",
                   "--dump", f"{BOOT_PML4:#x}:8", str(program))
    assert out["exit"] == {"kind": "cycle_limit"}
    assert out["instructions"] > 3                       # it got to the loop
    assert out["memory"][0]["hex"] == (0x5EED).to_bytes(8, "little").hex()
    pml4e = int.from_bytes(bytes.fromhex(out["memory"][1]["hex"]), "little")
    assert pml4e == page_tables()[BOOT_PML4 // 8] | PTE_A     # the walker's A flag landed


#: Prints the bytes of `text` (`.byte` values filled in by `print_bytes`) one at a time, then
#: ends at the exit port.
PRINT_BYTES = """\
        .text
        .globl  _start
_start: lea     text(%rip), %rsi
        mov     $(text_end - text), %ecx
1:      movzbl  (%rsi), %eax
        out     %al, $0xe9
        inc     %rsi
        dec     %ecx
        jnz     1b
        xor     %eax, %eax
        out     %eax, $0xf4
        .data
text:   .byte   {bytes}
text_end:
"""


def print_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    return write(tmp_path, name, PRINT_BYTES.format(bytes=", ".join(map(str, data))))


@pytest.mark.parametrize(("data", "text"), [
    (b"caf\xc3\xa9 \xe2\x9c\x93\n", "caf\u00e9 \u2713\n"),       # UTF-8: the text itself
    (b"\\x84", "\\x84"),                                        # an escape's four characters
    (b"A\x84\xff\\x84\n", None),                                # bytes that are not UTF-8
])
def test_json_console_is_exact(tmp_path, data, text):
    """The console's bytes come back exactly from the JSON (docs/system.md's rule), whether or
    not they are UTF-8; the four characters ``\\x84`` stay text, the byte 0x84 does not. The
    console streams to stderr as raw bytes."""
    proc = vtx("run", "--json", str(print_bytes(tmp_path, "print.S", data)), text=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(data + b"vtx run: stopped: exit port, code 0")
    out = json.loads(proc.stdout)
    assert console_bytes(out) == data
    if text is None:
        assert out["console_base64"] is not None
        assert out["console"] == "A\ufffd\ufffd\\x84\n"
    else:
        assert (out["console"], out["console_base64"]) == (text, None)


#: Straight-line INCs of RAX: RAX = k after k instructions. They retire as fast as the core
#: retires anything, often on consecutive clock edges, so a stop an edge late shows.
STRAIGHT_INC = """\
        .text
        .globl  _start
_start:
        .rept   20
        inc     %rax
        .endr
        hlt
"""


def instruction_addresses(path: Path, *mnemonics: str) -> list[int]:
    """The addresses of the program's instructions of those mnemonics, in order."""
    program = load_program(path)
    return sorted(a for a, text in program.disassembly.items() if text.startswith(mnemonics))


@pytest.mark.parametrize(("backend", "k"), [("verilator", 1), ("verilator", 3),
                                            ("verilator", 4), ("verilator", 19),
                                            ("amaranth", 4)])
def test_max_instructions_stops_at_the_boundary(tmp_path, backend, k):
    program = write(tmp_path, "inc.S", STRAIGHT_INC)
    steps = instruction_addresses(program, "inc")
    assert len(steps) == 20
    proc = vtx("run", "--json", "--trace", *backend_args(backend), "--max-instructions", str(k),
               str(program))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["exit"] == {"kind": "instruction_limit"}
    assert (out["instructions"], out["regs"]["rax"]) == (k, k)
    assert out["regs"]["rip"] == steps[k]               # the next INC's address
    assert traced_rips(proc.stderr) == steps[:k]
    assert "stopped: instruction limit reached (--max-instructions); " \
        f"{k} instruction{'' if k == 1 else 's'}" in proc.stderr


#: Straight-line code whose state after k instructions is known: the k-th instruction is an INC
#: of RAX (k odd) or its store to `result` (k even), so RAX = (k + 1) // 2, result = k // 2.
INC_AND_STORE = """\
        .text
        .globl  _start
_start:
        .rept   10
        inc     %rax
        mov     %rax, result(%rip)
        .endr
        hlt
        .data
        .balign 8
result: .quad   0
"""
INC_AND_STORE_STEPS = 20


def inc_and_store(tmp_path: Path) -> tuple[Path, list[int], int]:
    """The program, the addresses of its instructions before the HLT (in order), `result`'s."""
    path = write(tmp_path, "inc_store.S", INC_AND_STORE)
    steps = instruction_addresses(path, "inc", "mov")
    assert len(steps) == INC_AND_STORE_STEPS
    return path, steps, load_program(path).symbols["result"]


def assert_state_after(out: dict, k: int, steps: list[int], result: int) -> None:
    assert out["exit"] == {"kind": "instruction_limit"}
    assert out["instructions"] == k
    assert out["regs"]["rax"] == (k + 1) // 2
    assert out["regs"]["rip"] == steps[k]                # the next instruction's address
    assert out["memory"] == [{"addr": result, "length": 8,
                              "hex": (k // 2).to_bytes(8, "little").hex()}]


def traced_rips(stderr: str) -> list[int]:
    """The RIPs of the retired-instruction lines of ``--trace``, in order."""
    return [int(line.split()[2], 16) for line in stderr.splitlines()
            if line.startswith("trace ") and line.split()[2].startswith("0x")]


@pytest.mark.parametrize(("backend", "k"), [("verilator", 1), ("verilator", 2),
                                            ("verilator", 12), ("amaranth", 5)])
def test_max_instructions_and_dump(tmp_path, backend, k):
    """The dump after the limit holds the stores of the first k instructions, none after."""
    program, steps, result = inc_and_store(tmp_path)
    out = run_json(*backend_args(backend), "--max-instructions", str(k),
                   "--dump", f"{result:#x}:8", str(program))
    assert_state_after(out, k, steps, result)


def test_max_instructions_with_trace_and_the_text_summary(tmp_path):
    program, steps, result = inc_and_store(tmp_path)
    proc = vtx("run", "--trace", "--max-instructions", "7", "--dump", f"{result:#x}:8",
               str(program))
    assert proc.returncode == 0, proc.stderr
    assert traced_rips(proc.stderr) == steps[:7]
    assert "stopped: instruction limit reached (--max-instructions); 7 instructions" in \
        proc.stderr
    assert f"rax={(7 + 1) // 2:016x}" in proc.stderr
    assert proc.stdout.split()[-8:] == [f"{b:02x}" for b in (7 // 2).to_bytes(8, "little")]


def test_max_instructions_and_the_other_ends(tmp_path):
    """A limit the program does not reach leaves its own end; a cycle limit that comes first
    still ends the run."""
    program, steps, result = inc_and_store(tmp_path)
    out = run_json("--max-instructions", "1000", str(program))
    assert out["exit"] == {"kind": "hlt"}
    assert out["regs"]["rax"] == INC_AND_STORE_STEPS // 2
    assert INC_AND_STORE_STEPS < out["instructions"] < 1000
    # 19 instructions take far more than 30 cycles (the first retires at about cycle 23: the
    # trace example of docs/system.md).
    out = run_json("--max-cycles", "30", "--max-instructions", "19", str(program))
    assert out["exit"] == {"kind": "cycle_limit"} and out["instructions"] < 19
    # The HLT is the 21st instruction: the limit, checked as it retires, ends the run first
    # (docs/system.md).
    out = run_json("--max-instructions", str(INC_AND_STORE_STEPS + 1), str(program))
    assert out["exit"] == {"kind": "instruction_limit"}
    assert out["instructions"] == INC_AND_STORE_STEPS + 1


def test_console_streams_while_running_and_the_status_line(tmp_path):
    """The first console line is printed while the simulation is still running, and with
    stderr on a terminal a status line shows the progress (a pseudo-terminal here)."""
    import pty

    src = write(tmp_path, "stream.S", """
        .text
        .globl _start
    _start: mov $'A', %al
        out %al, $0xe9
        mov $10, %al
        out %al, $0xe9
    1:  jmp 1b
    """)
    env = {**os.environ}
    env.pop("PYTEST_CURRENT_TEST", None)
    # make sure the model exists, so the timing below is the simulation's
    assert vtx("run", "--max-cycles", "100", str(src)).returncode == 0
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--max-cycles",
                                 str(STREAM_CYCLES), str(src)], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        try:
            first = proc.stdout.readline()
            got_line_at = time.monotonic()
            assert first == b"A\n"
            assert proc.poll() is None, "the console line came only at the end of the run"
            proc.stdout.read()
            proc.wait(timeout=600)
            finished_at = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
        err = bytearray()
        with contextlib.suppress(OSError):          # EIO once the child's side is closed
            while chunk := os.read(master, 65536):
                err += chunk
    finally:
        os.close(master)
    text = err.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "cycle limit" in text
    assert finished_at - got_line_at > 0.5
    # At least one status line (every STATUS_SECONDS), erased again before the summary.
    assert "k cycles/s" in text and "\r\x1b[K" in text, text
    assert text.rindex("k cycles/s") < text.rindex("\r\x1b[K") < text.index("vtx run: stopped")


#: Cycles of the streaming test: several seconds at the model's speed (0.3-0.5 M cycles/s), so
#: that the status line (every 2 s) shows at least once.
STREAM_CYCLES = 3_000_000


#: The tests that build another (tracing) Verilator model of the SoC: opt-in (minutes each).
needs_tracing_model = pytest.mark.skipif(
    not (os.environ.get("VTX_TEST_VERILATOR_WAVES") or
         os.environ.get("WAVES", "").lower() in ("1", "yes", "true", "on")),
    reason="builds another (tracing) Verilator model: set VTX_TEST_VERILATOR_WAVES=1 or WAVES=1")


@needs_tracing_model
def test_waves_verilator(tmp_path):
    vcd = tmp_path / "exit.vcd"
    out = run_json("--waves", str(vcd), str(EXIT_CODE))
    assert out["exit"] == {"kind": "exit_port", "code": 3}
    from sim.waves import read_vcd_vars

    assert "console_valid" in {v.name for v in read_vcd_vars(vcd)}
    gtkw = vcd.with_suffix(".gtkw").read_text()
    assert "console_valid" in gtkw and "vm_exit_reason" in gtkw


@needs_tracing_model
def test_waves_ports_verilator(tmp_path):
    vcd = tmp_path / "exit.vcd"
    out = run_json("--waves", str(vcd), "--waves-ports", str(EXIT_CODE))
    assert out["exit"] == {"kind": "exit_port", "code": 3}
    from sim.run.model import UNTRACED_PORTS
    from sim.waves import read_vcd_vars

    variables = read_vcd_vars(vcd)
    names = {v.name for v in variables}
    assert {"gpr", "rip", "vm_exit_reason", "console_valid", "retired_rip"} <= names
    assert not names & set(UNTRACED_PORTS)
    assert len({v.scope for v in variables}) == 1           # the top's ports, nothing inside


# ---------------------------------------------------------------------------------------------
# Amaranth's simulator


def test_amaranth_backend_with_waves(tmp_path):
    vcd = tmp_path / "exit_code.vcd"
    # Amaranth's VCD has a variable per RAM row: a small RAM keeps it quick (no build needed)
    out = run_json("--sim", "amaranth", "--waves", str(vcd), "--max-cycles", "5000",
                   "--ram-bytes", f"{PROGRAM_BASE + 0x10000:#x}", str(EXIT_CODE))
    assert out["exit"] == {"kind": "exit_port", "code": 3}
    assert out["regs"]["rax"] == 3
    assert out["instructions"] == 2 and out["cycles"] > 1      # MOV and the OUT
    assert vcd.is_file()
    gtkw = vcd.with_suffix(".gtkw")
    assert gtkw.is_file() and "console_valid" in gtkw.read_text()
