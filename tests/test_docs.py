"""The figures the documentation quotes from runs, checked against what the tools print now, and
three rules of the tree: no file points outside the repository, every page of docs/ is listed in
README.md, and every "docs/X.md, "Section"" reference names a section that exists.

A checked figure or block is marked in the Markdown with an HTML comment (invisible when
rendered)::

    <!-- checked by tests/test_docs.py: KEY -->

KEY names a check of this file (`CHECKS`). A marker on a line of its own checks the fenced code
block or table right after it (and may take the command it runs from the paragraph before it);
a marker inside a paragraph checks the figure just before it, in the same paragraph. Figures
that depend on the machine's speed (seconds, cycles per second) are not checked; the docs call
them examples. A size quoted as "about N" is checked within the tolerance its marker states.

The runs, each once (tests that share a run are one test, so that pytest-xdist does not repeat
it on several workers):

* `vtx run` of the programs of examples/programs/ (the cached Verilator model, about a second
  each);
* the hypervisor demo once: `vtx run --json --trace --waves ... --waves-ports`, which is what
  `make demo` runs plus the JSON and the trace. Its VCD goes to a temporary directory (and
  tests/conftest.py points `vtx run --waves`'s record of the last run away from the user's
  `build/waves/LAST`);
* `vtx translate` of examples/ept_violation_write.json (RTL) and of small scenarios with
  `--model`;
* the system benchmark's three self-measuring programs (`sim.bench.system`), without its
  timing runs;
* the page set of the board's demo image (`sim.synth.system_scenario`: a run on the reference
  models, no synthesis).

The full-depth dump rate needs the tracing model (a model of its own, built on first use): it
runs with ``WAVES=1`` or ``VTX_TEST_VERILATOR_WAVES=1``, like the Verilator wave tests of
tests/test_run.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
PROGRAMS = REPO_ROOT / "examples" / "programs"
DEMO = REPO_ROOT / "examples" / "hypervisor" / "hypervisor.S"
HELLO = PROGRAMS / "hello.S"

#: Every check a marker may name, with what it compares.
CHECKS = {
    "demo-cycles": "the demo's cycle count, in millions, to the digits quoted",
    "demo-vcd-size": "the size of `make demo`'s VCD in MB (10^6 bytes), within 10 %",
    "ports-rate": "bytes a cycle of the demo's --waves-ports VCD, within 10 %",
    "full-dump-rate": "kB a cycle of a full-depth VCD (hello.S, past the header), within 20 %",
    "demo-board-figures": "the demo's cycles, time at the quoted clock, UART bytes and time",
    "demo-page-set": "the pages of the board's demo image (count, KiB, the table's pages)",
    "trace-example": "hello.S's first instruction and console lines, the demo's first VM "
                     "entry and exit lines of `vtx run --trace`",
    "hello-summary": "the summary line of `vtx run examples/programs/hello.S`, but the time",
    "fault-json": "the JSON the command of the paragraph before prints",
    "exit-code-instructions": "the instructions exit_code.S retires",
    "examples-table": "exit kind, code, RBX and console of each program of the table",
    "translate-example": "the lines `vtx translate` prints for the command of the paragraph "
                         "before",
    "translate-format": "the keys, in order, of each kind of `vtx translate` output line",
    "bench-system": "root_ipc, non_root_ipc and round_trip_cycles of sim.bench.system",
}

MARKER = re.compile(r"<!--\s*checked\s+by\s+tests/test_docs\.py:\s*([a-z0-9-]+)")
COMMENT = re.compile(r"<!--.*?-->", re.S)


# ---------------------------------------------------------------------------------------------
# Reading the docs


def doc_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def occurrences(key: str) -> list[tuple[Path, str, int]]:
    """Every marker of `key`: (file, its text, the marker's position)."""
    found = []
    for path in doc_files():
        text = path.read_text()
        found += [(path, text, m.start()) for m in MARKER.finditer(text) if m.group(1) == key]
    assert found, f"no doc has the marker of {key!r}"
    return found


def before(text: str, pos: int) -> str:
    """The paragraph the marker at `pos` closes (an inline marker), or the one before it (a
    marker on its own line), without HTML comments and with lines joined."""
    head = text[:pos].rstrip()
    breaks = list(re.finditer(r"\n[ \t]*\n", head))
    para = head[breaks[-1].end():] if breaks else head
    return " ".join(COMMENT.sub("", para).split())


def block_after(text: str, pos: int) -> list[str]:
    """The lines of the fenced code block after the marker at `pos`, without the list
    indentation."""
    m = re.compile(r"^([ \t]*)```[^\n]*\n(.*?)^[ \t]*```", re.M | re.S).search(text, pos)
    assert m, "no code block after the marker"
    assert not text[pos:m.start()].split("-->", 1)[1].strip(), "the marker is not right " \
        "before the block"
    indent = len(m.group(1))
    return [line[indent:] for line in m.group(2).splitlines()]


def table_after(text: str, pos: int) -> list[list[str]]:
    """The body rows of the Markdown table after the marker at `pos` (cells stripped)."""
    rest = text[pos:].split("-->", 1)[1].lstrip("\n").splitlines()
    rows = []
    for line in rest:
        if not line.strip().startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(rows) > 2, "no table after the marker"
    return rows[2:]                                     # past the header and the rule


def last_number(pattern: str, text: str) -> float:
    """The first group of the last match of `pattern` in `text`, as a number (thin spaces and
    blanks between digit groups allowed)."""
    matches = re.findall(pattern, text)
    assert matches, f"{pattern!r} not in {text!r}"
    last = matches[-1]
    return float((last[0] if isinstance(last, tuple) else last).replace(" ", ""))


def decimals(figure: str) -> int:
    return len(figure.split(".")[1]) if "." in figure else 0


def assert_about(measured: float, quoted: float, tolerance: float, what: str) -> None:
    assert abs(measured - quoted) <= tolerance * quoted, (
        f"{what}: the docs say about {quoted:g}, the run gives {measured:g} "
        f"(more than {tolerance:.0%} off): update the docs")


# ---------------------------------------------------------------------------------------------
# Running the tools


def vtx(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`vtx` as a user runs it (the console script's code, in a fresh interpreter)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=3600)
    if check:
        assert proc.returncode == 0, f"vtx {' '.join(args)}:\n{proc.stderr}"
    return proc


def run_json(*args: str, env: dict | None = None) -> tuple[dict, str]:
    proc = vtx("run", "--json", *args, env=env)
    return json.loads(proc.stdout), proc.stderr


def quoted_command(paragraph: str, tool: str) -> list[str]:
    """The arguments of the last `vtx TOOL ...` the paragraph quotes in backticks."""
    commands = re.findall(rf"`(?:\.venv/bin/)?vtx ({tool} [^`]+)`", paragraph)
    assert commands, f"no `vtx {tool} ...` in {paragraph!r}"
    return shlex.split(commands[-1])


def summary_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("vtx run: stopped:")]
    assert len(lines) == 1, stderr
    return lines[0]


def without_time(summary: str) -> str:
    return re.sub(r"\((?:model build [\d.]+ s, )?run [\d.]+ s\)", "(run T s)", summary)


# ---------------------------------------------------------------------------------------------
# The markers


def test_every_marker_names_a_check():
    used = set()
    for path in doc_files():
        for m in MARKER.finditer(path.read_text()):
            assert m.group(1) in CHECKS, f"{path.name}: unknown check {m.group(1)!r}"
            used.add(m.group(1))
    assert used == set(CHECKS), f"checks no doc marks: {set(CHECKS) - used}"


# ---------------------------------------------------------------------------------------------
# The hypervisor demo (one run) and the trace example


def test_demo_figures(tmp_path):
    vcd = tmp_path / "hypervisor.vcd"
    out, stderr = run_json("--trace", "--waves", str(vcd), "--waves-ports", str(DEMO))
    size = vcd.stat().st_size
    vcd.unlink()                # ~100 MB: not kept in pytest's temporary directories
    assert out["exit"] == {"kind": "exit_port", "code": 0}
    cycles = out["cycles"]

    # demo-cycles: "1.1 million cycles", "1.1 M cycles"
    for path, text, pos in occurrences("demo-cycles"):
        figure = re.findall(r"([\d.]+) (?:million|M) cycles", before(text, pos))[-1]
        assert round(cycles / 1e6, decimals(figure)) == float(figure), \
            f"{path.name}: the demo takes {cycles} cycles, not {figure} million"

    # demo-vcd-size: "about 94 MB"
    for path, text, pos in occurrences("demo-vcd-size"):
        quoted = last_number(r"about ([\d.]+) MB", before(text, pos))
        assert_about(size / 1e6, quoted, 0.10, f"{path.name}: the demo's VCD in MB")
    makefile = (REPO_ROOT / "Makefile").read_text()
    comment = re.search(r"~([\d.]+) MB\s*#\s*for its ([\d.]+) M cycles", makefile)
    assert comment, "the Makefile's comment on the demo's VCD"
    assert_about(size / 1e6, float(comment.group(1)), 0.10, "Makefile: the demo's VCD in MB")
    assert round(cycles / 1e6, decimals(comment.group(2))) == float(comment.group(2))

    # ports-rate: "about 85 bytes a cycle"
    for path, text, pos in occurrences("ports-rate"):
        quoted = last_number(r"(\d+) bytes", before(text, pos))
        assert_about(size / cycles, quoted, 0.10, f"{path.name}: --waves-ports bytes a cycle")

    # demo-board-figures (docs/fpga.md): the run's cycles and time, the UART's bytes and time
    console = out["console"].encode()
    uart_bytes = len(console) + console.count(b"\n")        # a line feed goes out as CR LF
    for path, text, pos in occurrences("demo-board-figures"):
        para = before(text, pos)
        m = re.search(r"([\d.]+) million cycles of work \((\d+) ms at (\d+) MHz\)", para)
        assert m, para
        assert round(cycles / 1e6, decimals(m.group(1))) == float(m.group(1)), path.name
        assert round(cycles / int(m.group(3)) / 1e3) == int(m.group(2)), path.name
        m = re.search(r"([\d ]+) UART bytes take ([\d.]+) s at (\d+) baud", para)
        assert m, para
        assert int(m.group(1).replace(" ", "")) == uart_bytes, (path.name, uart_bytes)
        seconds = uart_bytes * 10 / int(m.group(3))             # 8N1: 10 bits a byte
        assert round(seconds, decimals(m.group(2))) == float(m.group(2)), path.name

    # trace-example (docs/system.md): hello.S's first instruction and console byte, the demo's
    # first VM entry and exit
    hello = vtx("run", "--trace", str(HELLO)).stderr.splitlines()
    trace = stderr.splitlines()
    expected = [
        next(line for line in hello if line.startswith("trace") and " console " not in line),
        next(line for line in hello if " console " in line),
        next(line for line in trace if line.endswith("  VM entry")),
        next(line for line in trace if "  VM exit: " in line),
    ]
    for path, text, pos in occurrences("trace-example"):
        shown = [line.rstrip() for line in block_after(text, pos)]
        assert shown == [line.rstrip() for line in expected], f"{path.name}: the trace example"


def test_full_dump_rate(tmp_path):
    """The full-depth VCD's growth per cycle on hello.S (the demo's full dump is 2.8 GB: too
    large to write in a test)."""
    if not (os.environ.get("VTX_TEST_VERILATOR_WAVES") or os.environ.get("WAVES")):
        pytest.skip("needs the tracing model: set VTX_TEST_VERILATOR_WAVES=1 (or WAVES=1)")
    vcd = tmp_path / "hello.vcd"
    out, _ = run_json("--waves", str(vcd), str(HELLO))
    data = vcd.read_bytes()
    stamps = [m.start() for m in re.finditer(rb"^#\d+", data, re.M)]
    # Past the declarations and the initial dump of every variable (the first time stamp).
    rate = (len(data) - stamps[1]) / out["cycles"]
    for path, text, pos in occurrences("full-dump-rate"):
        quoted = last_number(r"([\d.]+) kB", before(text, pos))
        assert_about(rate / 1e3, quoted, 0.20, f"{path.name}: full-depth kB a cycle")


# ---------------------------------------------------------------------------------------------
# The example programs


def test_hello_summary():
    stderr = vtx("run", str(HELLO)).stderr
    for path, text, pos in occurrences("hello-summary"):
        quoted = re.findall(r"`(vtx run: stopped: [^`]*)`", before(text, pos))[-1]
        assert without_time(quoted) == without_time(summary_line(stderr)), path.name


def test_fault_json():
    for path, text, pos in occurrences("fault-json"):
        args = quoted_command(before(text, pos), "run")
        assert "--json" in args
        shown = json.loads("\n".join(block_after(text, pos)))
        assert shown == json.loads(vtx(*args).stdout), f"{path.name}: vtx {shlex.join(args)}"


def test_example_programs():
    runs = {}

    def result(name: str) -> dict:
        if name not in runs:
            runs[name] = run_json(str(PROGRAMS / name))[0]
        return runs[name]

    for path, text, pos in occurrences("exit-code-instructions"):
        quoted = last_number(r"`exit_code\.S` counts (\d+) instructions", before(text, pos))
        assert result("exit_code.S")["instructions"] == quoted, path.name

    for path, text, pos in occurrences("examples-table"):
        rows = table_after(text, pos)
        for cells in rows:
            name, what = cells[0].strip("`"), cells[1]
            assert (PROGRAMS / name).is_file(), f"{path.name}: {name}"
            r = result(name)
            if m := re.search(r"exit (?:port with )?code (\d+)", what):
                assert r["exit"] == {"kind": "exit_port", "code": int(m.group(1))}, name
            if m := re.search(r"RBX = (\d+)", what):
                assert r["regs"]["rbx"] == int(m.group(1)), name
            if what.startswith("HLT in root operation"):
                assert r["exit"]["kind"] == "hlt", name
            if m := re.search(r"a (#\w+)", what):
                assert r["exit"]["kind"] == "fault" and r["exit"]["name"] == m.group(1), name
            if "console output" in what:
                assert r["console"], name
        assert {row[0].strip("`") for row in rows} == {p.name for p in PROGRAMS.glob("*.S")}


# ---------------------------------------------------------------------------------------------
# vtx translate


def test_translate_example():
    for path, text, pos in occurrences("translate-example"):
        args = quoted_command(before(text, pos), "translate")
        printed = [json.loads(line) for line in vtx(*args).stdout.splitlines()]
        shown = [json.loads(line) for line in block_after(text, pos)]
        assert shown == printed, f"{path.name}: vtx {shlex.join(args)}"


def test_translate_format(tmp_path):
    """Each line of the format example has the keys, in the order, of a real line of its
    kind (the values there are placeholders)."""
    scenario = tmp_path / "faults.json"
    scenario.write_text(json.dumps({
        "ept": False,
        "guest": {"cr0": "0x80010001", "cr3": "0x1000", "cr4": "0x20", "efer": "0xd00"},
        "memory": [],
        "requests": [{"gla": "0x2000", "access": "read", "cpl": 0},            # PML4E not present
                     {"gla": "0x800000000000", "access": "read", "cpl": 0}],   # not canonical
    }))
    lines = (vtx("translate", "examples/ept_violation_write.json").stdout
             + vtx("translate", "--model", "examples/ept_misconfig.json").stdout
             + vtx("translate", "--model", str(scenario)).stdout).splitlines()
    real = {}
    for line in map(json.loads, lines):
        kind = line.get("outcome", next(iter(line)))
        if kind != "ok" or "cycles" in line:               # --model's ok lines have no cycles
            real.setdefault(kind, list(line))
    for path, text, pos in occurrences("translate-format"):
        seen = set()
        for line in block_after(text, pos):
            keys = re.findall(r'"(\w+)":', line)
            outcome = re.search(r'"outcome": "(\w+)"', line)
            kind = outcome.group(1) if outcome else keys[0]
            assert keys == real[kind], f"{path.name}: {line}"
            seen.add(kind)
        assert seen == set(real), f"{path.name}: the format example lacks {set(real) - seen}"


# ---------------------------------------------------------------------------------------------
# The system benchmark's cycle figures (not its speed figures)


def test_bench_system_figures(tmp_path):
    from sim.bench import system as bench

    def measure(name: str, source: str) -> dict:
        path = tmp_path / f"{name}.S"
        path.write_text(source)
        out, _ = run_json(str(path))
        assert out["exit"] == {"kind": "exit_port", "code": 0}, name
        return out

    loop_insns = 4 * bench.LOOP_ITERATIONS + 5      # as sim.bench.system counts them
    root = measure("root", bench.root_loop())
    guest = measure("non_root", bench.non_root_loop())
    trip = measure("round_trip", bench.round_trip())
    figures = {"root_ipc": loop_insns / root["regs"]["r13"],
               "non_root_ipc": loop_insns / guest["regs"]["r13"],
               "round_trip_cycles": trip["regs"]["r13"] / bench.ROUND_TRIPS}
    for path, text, pos in occurrences("bench-system"):
        rows = {cells[0].strip("`"): cells[-1] for cells in table_after(text, pos)}
        for key, value in figures.items():
            quoted = re.match(r"([\d.]+)", rows[key]).group(1)
            assert round(value, decimals(quoted)) == float(quoted), \
                f"{path.name}: {key} is {value:.4f} now, the table says {quoted}"
        cpi = re.search(r"\(([\d.]+) cycles per instruction\)", rows["root_ipc"])
        if cpi:
            assert round(1 / figures["root_ipc"], decimals(cpi.group(1))) == \
                float(cpi.group(1))


# ---------------------------------------------------------------------------------------------
# The board's page set (docs/fpga.md)


def pages_of(cell: str) -> set[int]:
    pages = set()
    for part in cell.split(","):
        first, _, last = part.strip().partition("-")
        pages.update(range(int(first, 16), int(last or first, 16) + 1))
    return pages


def test_demo_page_set():
    from sim.synth import system_scenario

    pages = set(system_scenario().pages)
    for path, text, pos in occurrences("demo-page-set"):
        m = re.search(r"(\d+) pages, (\d+) KiB", before(text, pos))
        assert m and int(m.group(1)) == len(pages) and int(m.group(2)) == 4 * len(pages)
        shown = set().union(*(pages_of(cells[0]) for cells in table_after(text, pos)))
        assert shown == pages, f"{path.name}: the table {sorted(map(hex, shown))}, " \
            f"the run {sorted(map(hex, pages))}"


# ---------------------------------------------------------------------------------------------
# Rules of the tree


def repository_files() -> list[Path]:
    """The files of the tree git knows of or would add (tracked, and untracked but not ignored)."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")
    paths = [REPO_ROOT / os.fsdecode(name) for name in names if name]
    return [path for path in paths if path.is_file()]


def test_no_file_points_outside_the_repository():
    # Spelled in pieces, so that this file does not match itself.
    outside = ["../" + "shared", "shared" + "/spec", "shared" + "/ref"]
    offenders = []
    for path in repository_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue                                    # binary (pictures)
        text = data.decode("utf-8", "replace")
        offenders += [f"{path.relative_to(REPO_ROOT)}: {s}" for s in outside if s in text]
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_every_doc_is_listed_in_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    layout = re.search(r"^docs/ .*?(?=^\S)", readme, re.M | re.S)
    assert layout, "README.md's layout has no docs/ entry"
    for path in DOCS.glob("*.md"):
        assert re.search(rf"(?<![\w-]){re.escape(path.name)}", layout.group(0)), \
            f"README.md's layout does not list docs/{path.name}"


def section_titles(path: Path) -> set[str]:
    """What a reference may name in `path`: its headings, bold paragraph labels
    ("**The working copy.**") and labels that start a line ("Sources: ..."), without code
    quotes."""
    text = path.read_text()
    titles = set(re.findall(r"^#+\s+(.+?)\s*$", text, re.M))
    titles |= set(re.findall(r"\*\*([^*]+?)[.:]?\*\*", text))
    titles |= set(re.findall(r"^([A-Z][\w ]+):", text, re.M))
    return {t.replace("`", "") for t in titles}


def test_references_between_docs_resolve():
    for path in doc_files():
        text = path.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: link to {target}"
        for name, title in re.findall(r'(?:docs/)?([a-z-]+\.md)\)?,? (?:section )?"([^"]+)"',
                                      text):
            target = DOCS / name
            assert target.exists(), f"{path.name}: {name}"
            titles = section_titles(target)
            title = " ".join(title.replace("`", "").split())
            assert any(title in t for t in titles), \
                f'{path.name}: {name} has no section "{title}"'
