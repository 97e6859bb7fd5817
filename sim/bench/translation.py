"""The translation bench (`vtx bench translation`, part of ``make bench``): build the bench models,
run the workloads, report.

Steps (each prints a progress line with the elapsed time; long tool runs print a line every
few seconds):

1. Generate the Verilog of every unit configuration and Verilate it (cached in
   ``build/bench/obj_<name>``): contexts 1, 2, 4, 8, 16 with the walker's caches (``c1`` ..
   ``c16``) and 8 contexts without them (``u8``). Two builds run at a time; each config's runs
   start as soon as its model is ready.
2. Run the workloads (cycle counts are deterministic; only wall/CPU times depend on the load).
3. Speed: the same bench top and workload in Verilator and in Amaranth's simulator, back to
   back once the builds are done; the Amaranth run is shorter, and a Verilator run of exactly
   the same short workload must give the same counters.
4. Write ``build/bench/translation.{md,json}`` and the plots ``build/bench/*.png``.

``--quick`` shrinks every run (for trying the flow; the figures are then noisier).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import sys
import time

from sim import flow

from . import (
    BenchConfig,
    Progress,
    RunSpec,
    Workload,
    bench_dir,
    build_model,
    generate_verilog,
    report,
    run_amaranth,
    run_model,
)

CONTEXTS = (1, 2, 4, 8, 16)
LATENCIES = (20, 100)
REF_CONTEXTS = 8          # workloads table and speed comparison
REF_LATENCY = 20
#: Build order: the longest builds first, so that they do not finish last.
BUILD_ORDER = (BenchConfig(16), BenchConfig(8), BenchConfig(8, uncached=True),
               BenchConfig(4), BenchConfig(2), BenchConfig(1))

#: Workloads of the refs-per-miss table: (key, label, RunSpec fields).
WORKLOADS = (
    ("random_64mib", "random 4 KiB pages over 64 MiB", dict(kind=Workload.RANDOM, region_shift=26)),
    ("random_1gib", "random 4 KiB pages over 1 GiB", dict(kind=Workload.RANDOM, region_shift=30)),
    ("sequential", "sequential 4 KiB pages", dict(kind=Workload.SEQUENTIAL)),
    ("strided", "one 4 KiB page every 2 MiB", dict(kind=Workload.STRIDED, stride_shift=21)),
)
SWEEP_WORKLOAD = dict(kind=Workload.RANDOM, region_shift=30)     # miss throughput vs contexts


def plan(quick: bool):
    """Every Verilator run: (config, key, RunSpec). Keys are unique."""
    scale = 0.1 if quick else 1.0

    def n(x):
        return max(8, int(x * scale))

    runs = []
    for c in CONTEXTS:
        for lat in LATENCIES:
            runs.append((BenchConfig(c), f"sweep_c{c}_l{lat}",
                         RunSpec(**SWEEP_WORKLOAD, count=n(3000), warmup=n(1000), latency=lat)))
    ref = BenchConfig(REF_CONTEXTS)
    for key, _, fields in WORKLOADS:
        runs.append((ref, f"workload_{key}",
                     RunSpec(**fields, count=n(20000), warmup=n(5000), latency=REF_LATENCY)))
    runs.append((ref, "hits", RunSpec(kind=Workload.HITS, hit_shift=3, count=n(500_000),
                                      warmup=64, latency=REF_LATENCY)))
    unc = BenchConfig(REF_CONTEXTS, uncached=True)
    for lat in (0, 20, 100):
        runs.append((unc, f"uncached_walk_l{lat}",
                     RunSpec(kind=Workload.SEQUENTIAL, count=1, warmup=0, latency=lat)))
    for lat in LATENCIES:
        runs.append((unc, f"uncached_random_l{lat}",
                     RunSpec(**SWEEP_WORKLOAD, count=n(2000), warmup=n(200), latency=lat)))
    return runs


def speed_specs(quick: bool):
    """(long Verilator run, short run for both simulators) of the speed comparison."""
    base = dict(**SWEEP_WORKLOAD, latency=REF_LATENCY)
    long = RunSpec(**base, count=2000 if quick else 40000, warmup=0)
    short = RunSpec(**base, count=40 if quick else 150, warmup=0)
    return long, short


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vtx bench translation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (noisier figures)")
    parser.add_argument("--builds", type=int, default=2, help="Verilator builds at a time")
    parser.add_argument("--verilog", metavar="NAME",
                        help="only generate the Verilog of configuration NAME (c8, u8, ...) "
                             "and print its path")
    args = parser.parse_args(argv)
    if args.verilog:
        print(generate_verilog(BenchConfig.from_name(args.verilog)))
        return 0

    progress = Progress()
    out_dir = bench_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    progress(f"translation bench{' (quick)' if args.quick else ''}: results in "
             f"{out_dir.relative_to(flow.REPO_ROOT)}; load average "
             f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    flow.verilator_env()

    runs = plan(args.quick)
    results: dict[str, dict] = {}
    binaries = {}

    # 1 + 2: builds two at a time; a config's runs start once its model exists.
    jobs = flow.BUILD_JOBS
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.builds)) as pool:
        futures = {pool.submit(build_model, cfg, progress=progress, jobs=jobs): cfg
                   for cfg in BUILD_ORDER}
        for fut in concurrent.futures.as_completed(futures):
            cfg = futures[fut]
            binaries[cfg] = fut.result()
            for rcfg, key, spec in runs:
                if rcfg != cfg:
                    continue
                t0 = time.monotonic()
                r = run_model(binaries[cfg], spec)
                r.update(config=cfg.name, spec={**spec.ports(), "kind": Workload(spec.kind).name})
                results[key] = r
                progress(f"run {key:<24} {cfg.name:>4}: {r['responses']} responses, "
                         f"{r['cycles']} cycles, {r['port_reads']} reads "
                         f"({time.monotonic() - t0:.1f}s)")

    # 3: speed, side by side, after the builds.
    ref = BenchConfig(REF_CONTEXTS)
    long, short = speed_specs(args.quick)
    progress(f"speed: Verilator {ref.name}, random 1 GiB, {long.count} requests")
    v_long = run_model(binaries[ref], long)
    progress(f"speed: Verilator {v_long['sim_cycles']} cycles in {v_long['wall_seconds']:.2f}s")
    v_short = run_model(binaries[ref], short)
    progress(f"speed: Amaranth simulator {ref.name}, same workload, {short.count} requests "
             f"(~{v_short['sim_cycles']} cycles)")
    a_short = run_amaranth(ref, short)
    progress(f"speed: Amaranth {a_short['sim_cycles']} cycles in {a_short['wall_seconds']:.1f}s")
    v_long2 = run_model(binaries[ref], long)        # once more after, to bracket the load
    speed = {"verilator_long": v_long, "verilator_long_after": v_long2,
             "verilator_short": v_short, "amaranth_short": a_short,
             "long_spec": long.ports(), "short_spec": short.ports()}

    # 4: report.
    meta = {
        "quick": args.quick,
        "python": platform.python_version(),
        "verilator": flow._version("verilator"),
        "amaranth": flow._version("amaranth"),
        "cpus": os.cpu_count(),
        "load_average_end": os.getloadavg(),
        "bench_seconds": round(progress.elapsed(), 1),
    }
    summary = report.summarise(results, speed, meta)
    paths = report.write(summary, out_dir)
    progress("wrote " + ", ".join(str(p.relative_to(flow.REPO_ROOT)) for p in paths))
    print()
    print(paths[0].read_text())
    problems = summary["consistency_problems"]
    if problems:
        print("CONSISTENCY PROBLEMS:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
