"""`vtx translate SCENARIO.json`: run a scenario's translation requests through the RTL.

The contract is docs/translation-contract.md, section "vtx translate": the scenario format
(checked by `sim.translate.scenario`), one JSON object per request on stdout, then
``{"memory_after": [...]}``, and exit status 2 with a message naming the field for bad input
(nothing is built or simulated then).

Backends:

* ``--sim verilator`` (default): the ``translation_unit`` RTL, Verilated through `sim.flow`
  (Verilog and the Verilator model are cached under ``build/``, so only the first run builds),
  driven by the cocotb module `sim.translate.testbench`. The scenario reaches the simulator as a
  JSON file named by ``$VTX_TRANSLATE_IN``; the results come back in the file
  ``$VTX_TRANSLATE_OUT``.
* ``--sim amaranth``: the same RTL in Amaranth's simulator
  (`sim.translate.amaranth_sim.run_amaranth`).
* ``--model``: the reference model alone (`tb.model.translation`): no cycles, and ``mem_refs``
  is the model's uncached count.

Either RTL backend offers the requests one at a time in the scenario's order (the spec: requests
take effect in order), answers the unit's memory reads after ``--latency`` cycles from the
scenario's memory and applies its accessed/dirty writes. ``cycles`` and ``mem_refs`` of the
``ok`` lines come from the RTL; every response is then compared with the reference model (the
architectural fields of `Result.fields`, and ``memory_after``): a disagreement is reported on
stderr and the exit status is 1, so every run is also a check.

stdout carries only the spec's output lines. Everything else goes to stderr, each line prefixed
``vtx translate:``: the MAXPHYADDR the design was built with and the backend (the spec says
`vtx translate` prints it; stderr keeps stdout machine-readable), build notices, progress of long
runs, the paths of waves, a summary, and errors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rtl.arch import ACCESS_NAMES, MAXPHYADDR, OUTCOME_NAMES, Outcome, PageSize
from sim import flow
from sim.cli import RunError, UsageError, int_option
from sim.translate.scenario import Scenario, ScenarioError, format_output_lines, load_scenario
from tb.model.translation import Memory, Request, Result, TranslationModel, hex_str

PROG = "vtx translate"

#: The Verilog top and how it is made (the same as `sim.lint.TOPS`, so the caches are shared).
TOPLEVEL = "translation_unit"
FACTORY = "rtl.translation.unit:TranslationUnit"
PARAMS: dict = {}
#: The MAXPHYADDR of the design as built (and of the scenario checks).
DESIGN_MAXPHYADDR = PARAMS.get("maxphyaddr", MAXPHYADDR)
COCOTB_MODULE = "sim.translate.testbench"

#: GTKWave groups of the unit's ports (by exact port name).
GTKW_PORT_GROUPS = {
    "clock/reset": ["clk", "rst"],
    **{port: [f"{port}__valid", f"{port}__ready", f"{port}__payload"]
       for port in ("req", "resp", "mem_req", "mem_resp", "inval")},
    "context": ["ctx"],
    "status": ["idle", "counters"],
}

DEFAULT_LATENCY = 20
MIN_LATENCY, MAX_LATENCY = 1, 255
#: A progress line on stderr at most this often (seconds, counted from the first request);
#: shorter runs print none.
PROGRESS_INTERVAL = 5.0
#: The cocotb run reports how far it got every this many requests.
PROGRESS_EVERY = 50
#: Announce the Verilator build if generating and compiling take longer than this (seconds).
BUILD_NOTICE_AFTER = 2.0
#: Mismatches reported in full before the rest are only counted.
MAX_MISMATCHES_SHOWN = 10

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Translate the requests of SCENARIO.json (format: docs/translation-contract.md, "vtx translate")
through the translation unit RTL and print the spec's output: one JSON object per request, in
request order, then {"memory_after": [...]} with every memory word that changed.

The RTL's responses are checked against the reference model. On "ok" lines, "cycles" (from
the cycle a request is offered to the cycle its response is valid) and "mem_refs" (the
request's paging-structure reads as the unit counts them: fewer than the uncached walk's when
caches hit, 0 on a TLB hit; accessed/dirty writes are not counted) are the RTL's. Requests are
offered one at a time, in order; memory answers reads after --latency cycles and takes the
accessed/dirty flag writes.

stdout holds only those output lines. stderr gets lines starting "vtx translate:": first
"MAXPHYADDR=<n>, <backend>" (the MAXPHYADDR the design was built with), then build notices,
progress of long runs, the paths written by --waves, a summary and any error."""

EPILOG = """\
exit status:
  0  done (with an RTL backend: every response matched the reference model)
  1  the RTL disagreed with the reference model (details on stderr), or the build or the
     simulation failed
  2  bad input (a message names the offending field, e.g. "requests[2].access: ..."), an
     unreadable file, or bad options; nothing is built or simulated

examples:
  vtx translate examples/guest_2m_pages.json               # Verilator (model cached)     
  vtx translate --sim amaranth examples/ept_misconfig.json
  vtx translate --model examples/ept_violation_write.json  # reference model only
  vtx translate --waves build/t.vcd examples/ept_misconfig.json  # + build/t.gtkw"""


def _latency(text: str) -> int:
    n = int_option(text)
    if not MIN_LATENCY <= n <= MAX_LATENCY:
        raise argparse.ArgumentTypeError(f"{n} is outside {MIN_LATENCY}..{MAX_LATENCY}")
    return n


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "translate",
        help="run a scenario's translation requests through the RTL (examples/*.json)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", metavar="SCENARIO.json", help="the scenario file")
    parser.add_argument("--sim", choices=("verilator", "amaranth"), default=None,
                        help="simulator of the RTL: verilator (default; the Verilator model is "
                             "built on first use and cached under build/ until the RTL "
                             "changes) or amaranth (Amaranth's "
                             "Python simulator, no build)")
    parser.add_argument("--model", action="store_true",
                        help="run the reference model alone: no RTL, no cycles; mem_refs is the "
                             "uncached reference count")
    parser.add_argument("--waves", metavar="FILE.vcd", type=Path,
                        help="write a VCD of the RTL run to FILE.vcd and a GTKWave save file "
                             "FILE.gtkw beside it (paths printed on stderr). Verilator needs a "
                             "tracing model, built and cached the same way. Without --waves, "
                             "WAVES=1 in the environment (the flow's switch) puts them in "
                             "build/waves/translate-<scenario>-<sim>/")
    parser.add_argument("--latency", metavar="N", type=_latency, default=None,
                        help=f"memory read latency of the RTL run: a read is answered N cycles "
                             f"after the unit issues it, {MIN_LATENCY}..{MAX_LATENCY} "
                             f"(default {DEFAULT_LATENCY})")
    parser.set_defaults(func=run)
    return parser


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """Prints ``<done>/<total> requests`` on stderr, at most every `interval` seconds."""

    def __init__(self, total: int, interval: float = PROGRESS_INTERVAL):
        self.total = total
        self.interval = interval
        self.start: float | None = None     # set when the first request starts
        self.last = 0.0
        self.shown = 0
        self.lock = threading.Lock()

    def update(self, done: int) -> None:
        now = time.monotonic()
        with self.lock:
            if self.start is None:
                self.start = self.last = now
            if now - self.last < self.interval or done == self.shown:
                return
            self.last = now
            self.shown = done
        _say(f"{done}/{self.total} requests ({now - self.start:.0f} s)")

    def counting(self, items: Sequence) -> Iterator:
        """Yield `items`, reporting how many were finished before each one."""
        for i, item in enumerate(items):
            self.update(i)
            yield item


@contextlib.contextmanager
def _watch_progress_file(path: Path, progress: Progress):
    """Poll `path` (a count written by the cocotb run) and report it, until the block ends."""
    stop = threading.Event()

    def poll():
        while not stop.wait(0.5):
            with contextlib.suppress(OSError, ValueError):
                progress.update(int(path.read_text()))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------------------------------
# Backends. Each returns (records, memory words after the run); a record is a dict of the
# response fields as ints (outcome, gla, gpa, hpa, error_code, qualification, page_size,
# mem_reads) plus cycles.


def _unit_parameters() -> dict:
    """The port widths of the unit built with PARAMS (its defaults where PARAMS is silent)."""
    import inspect

    from rtl.translation.unit import TranslationUnit, mem_tag_width

    defaults = {name: p.default for name, p in
                inspect.signature(TranslationUnit.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    params = {**defaults, **PARAMS}
    return {"maxphyaddr": params["maxphyaddr"], "tag_width": params["tag_width"],
            "mem_tag_width": mem_tag_width(params["contexts"])}


def _build_model(waves: bool) -> Path:
    """The cached Verilator model of the unit (built on first use)."""
    verilog = flow.generate_verilog(FACTORY, TOPLEVEL, PARAMS)
    return flow.build_verilator(verilog, TOPLEVEL, waves=waves)


def _context_fields(scenario: Scenario) -> dict:
    from sim.translate.amaranth_sim import context_values

    return {k: int(v) for k, v in context_values(scenario.context).items()}


def _request_tuples(requests: Iterable[Request]) -> list[tuple]:
    return [(r.gla, r.access, r.cpl) for r in requests]


def run_amaranth_backend(scenario: Scenario, latency: int, waves: Path | None,
                         progress: Progress):
    from sim.translate.amaranth_sim import run_amaranth

    memory = scenario.make_memory()
    results, _total = run_amaranth(memory, scenario.context,
                                   progress.counting(_request_tuples(scenario.requests)),
                                   latency=latency, params=PARAMS or None,
                                   vcd_path=str(waves) if waves else None)
    records = []
    for r in results:
        rec = {}
        for name in ("outcome", "gla", "gpa", "hpa", "error_code", "qualification", "page_size",
                     "mem_reads", "cycles"):
            value = getattr(r, name)
            rec[name] = int(getattr(value, "value", value))
        records.append(rec)
    return records, memory


def run_verilator_backend(scenario: Scenario, latency: int, waves: Path | None,
                          progress: Progress, run_name: str):
    params = _unit_parameters()
    want_waves = waves is not None
    try:
        with flow.notice_if_slow(_say, f"building the Verilator model of {TOPLEVEL}"
                                 f"{' with tracing' if want_waves else ''} "
                                 "(cached under build/ until the RTL changes)",
                                 BUILD_NOTICE_AFTER):
            build_dir = _build_model(want_waves)
    except flow.FlowError as e:
        raise RunError(str(e)) from e

    def make_job(tmp: Path) -> dict:
        return {
            **params,
            "context": _context_fields(scenario),
            "memory": [[a, v] for a, v in scenario.memory.items()],
            "requests": [[r.gla, r.access.value, r.cpl] for r in scenario.requests],
            "latency": latency,
            "progress_path": str(tmp / "progress"),
            "progress_every": PROGRESS_EVERY,
        }

    try:
        out = flow.run_cocotb_job(
            COCOTB_MODULE, TOPLEVEL, build_dir, testcase="translate_scenario",
            make_job=make_job, in_var="VTX_TRANSLATE_IN", out_var="VTX_TRANSLATE_OUT",
            watch=lambda tmp: _watch_progress_file(tmp / "progress", progress),
            waves=waves, name=run_name)
    except (flow.FlowError, flow.SimulationFailed) as e:
        raise RunError(f"the Verilator simulation failed: {e}") from e
    return out["results"], Memory((a, v) for a, v in out["memory"])


# ---------------------------------------------------------------------------------------------
# Checking and output


def _rtl_result(index: int, rec: dict) -> Result:
    """The RTL's response as a `Result` (only the fields its outcome defines are set)."""
    try:
        outcome = Outcome(rec["outcome"])
    except ValueError:
        raise RunError(f"request {index}: the RTL answered outcome {rec['outcome']}, "
                       "which is not an outcome") from None
    result = Result(outcome, rec["gla"], mem_reads=rec["mem_reads"])
    if outcome == Outcome.OK:
        result.gpa, result.hpa = rec["gpa"], rec["hpa"]
        try:
            result.page_size = PageSize(rec["page_size"])
        except ValueError:
            result.page_size = rec["page_size"]   # reported as a mismatch
    elif outcome == Outcome.PAGE_FAULT:
        result.error_code = rec["error_code"]
    elif outcome == Outcome.EPT_VIOLATION:
        result.gpa, result.qualification = rec["gpa"], rec["qualification"]
    elif outcome == Outcome.EPT_MISCONFIG:
        result.gpa = rec["gpa"]
    return result


def _show_fields(fields: dict) -> str:
    parts = []
    for key, value in fields.items():
        if key == "outcome":
            shown = OUTCOME_NAMES.get(value, str(value))
        elif key == "page_size":
            shown = value.name.removeprefix("SIZE_") if isinstance(value, PageSize) else str(value)
        else:
            shown = hex_str(value) if isinstance(value, int) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def compare(requests: Sequence[Request], model: Sequence[Result], rtl: Sequence[Result],
            model_after: Sequence[tuple[int, int]], rtl_after: Sequence[tuple[int, int]]
            ) -> list[str]:
    """Messages for every disagreement between the RTL and the model (empty: all agree)."""
    problems = []
    if len(rtl) != len(model):
        problems.append(f"the RTL answered {len(rtl)} requests, the scenario has {len(model)}")
    for i, (req, m, r) in enumerate(zip(requests, model, rtl)):
        mf, rf = m.fields(), r.fields()
        if mf != rf:
            keys = [k for k in dict.fromkeys([*mf, *rf]) if mf.get(k) != rf.get(k)]
            problems.append(
                f"request {i} ({ACCESS_NAMES[req.access]} gla {hex_str(req.gla)} cpl {req.cpl}): "
                f"the RTL disagrees with the reference model on {', '.join(keys)}\n"
                f"    RTL:   {_show_fields(rf)}\n"
                f"    model: {_show_fields(mf)}  ({m.reason})")
    model_words, rtl_words = dict(model_after), dict(rtl_after)
    if model_words != rtl_words:
        lines = []
        for addr in sorted(set(model_words) | set(rtl_words)):
            mv, rv = model_words.get(addr), rtl_words.get(addr)
            if mv != rv:
                show = lambda v: "unchanged" if v is None else hex_str(v)  # noqa: E731
                lines.append(f"    {hex_str(addr)}: RTL {show(rv)}, model {show(mv)}")
        problems.append("memory_after: the RTL's memory writes differ from the reference "
                        "model's\n" + "\n".join(lines))
    return problems


def _print_lines(lines: Iterable[str]) -> None:
    out = sys.stdout
    try:
        for line in lines:
            out.write(line + "\n")
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): drop the rest of stdout quietly, keep the checks.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as e:
        _say(str(e))
        return EXIT_USAGE
    except ScenarioError as e:
        _say(str(e))
        return EXIT_USAGE
    except (RunError, OSError) as e:
        _say(f"error: {e}")
        return EXIT_MISMATCH


def _run(args: argparse.Namespace) -> int:
    if args.model:
        given = [opt for opt, value in (("--sim", args.sim), ("--waves", args.waves),
                                        ("--latency", args.latency)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: not with --model (the model runs no RTL)")
    backend = "model" if args.model else (args.sim or "verilator")
    latency = DEFAULT_LATENCY if args.latency is None else args.latency
    waves = args.waves
    if waves is not None and waves.suffix == ".gtkw":
        raise UsageError(f"--waves: {waves} would be overwritten by the GTKWave save file; "
                         "name the VCD (FILE.vcd)")

    # Check the input before anything is built or simulated.
    scenario = load_scenario(args.scenario, maxphyaddr=DESIGN_MAXPHYADDR)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(args.scenario).stem)
    if waves is None and backend != "model" and flow.waves_requested():
        # WAVES=1, the flow's switch for every simulation: waves go to build/waves/.
        waves = flow.resolve_build_root() / "waves" / f"translate-{stem}-{backend}" \
            / f"{TOPLEVEL}.vcd"
    if waves is not None:
        try:
            waves.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--waves: cannot create the directory of {waves}: {e}") from None
    model = TranslationModel(scenario.make_memory(), scenario.context)
    try:
        model_results = [model.step(r) for r in scenario.requests]
    except ValueError as e:   # the parser should have caught it; still bad input
        raise ScenarioError(str(e)) from None
    model_after = model.memory_after()

    if backend == "model":
        _say(f"MAXPHYADDR={DESIGN_MAXPHYADDR}, reference model")
        _print_lines(format_output_lines(model_results, model_after))
        return EXIT_OK

    _say(f"MAXPHYADDR={DESIGN_MAXPHYADDR}, {backend} (memory latency {latency} cycles)")
    progress = Progress(len(scenario.requests))
    started = time.monotonic()
    if backend == "amaranth":
        try:
            records, memory = run_amaranth_backend(scenario, latency, waves, progress)
        except TimeoutError as e:
            raise RunError(f"the Amaranth simulation failed: {e}") from e
    else:
        records, memory = run_verilator_backend(
            scenario, latency, waves, progress, run_name=f"translate-{stem}-{os.getpid()}")
    elapsed = time.monotonic() - started

    rtl_results = [_rtl_result(i, rec) for i, rec in enumerate(records)]
    rtl_after = memory.changed_since(scenario.memory)
    cycles = [rec["cycles"] for rec in records]
    _print_lines(format_output_lines(rtl_results, rtl_after, cycles))

    if waves is not None:
        from sim.waves import write_gtkw

        # By exact port names: Amaranth's VCD also has copies ("req__valid$7") and fields.
        gtkw = write_gtkw(waves, waves.with_suffix(".gtkw"), GTKW_PORT_GROUPS,
                          toplevel=TOPLEVEL if backend == "verilator" else None)
        _say(f"waves: {waves} (GTKWave: gtkwave {gtkw})")

    problems = compare(scenario.requests, model_results, rtl_results, model_after, rtl_after)
    if problems:
        for problem in problems[:MAX_MISMATCHES_SHOWN]:
            _say(f"MISMATCH: {problem}")
        if len(problems) > MAX_MISMATCHES_SHOWN:
            _say(f"... and {len(problems) - MAX_MISMATCHES_SHOWN} more mismatches")
        _say(f"FAILED: {len(problems)} disagreement(s) between the RTL ({backend}) and the "
             "reference model")
        return EXIT_MISMATCH

    total_reads = sum(rec["mem_reads"] for rec in records)
    agree = "1 request agrees" if len(records) == 1 else f"{len(records)} requests agree"
    _say(f"{agree} with the reference model ({sum(cycles)} cycles in responses, "
         f"{total_reads} paging-structure reads, {elapsed:.1f} s)")
    return EXIT_OK
