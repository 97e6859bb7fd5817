"""Every formal job: proofs, non-vacuity covers and mutation checks (run by `sim.formal`).

A job's `build` makes the harness top; `mode`/`depth` go to SymbiYosys. `fast` jobs are the
subset `make test` runs (tests/test_formal.py); `make formal` runs all proofs and covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from . import mutations as mut
from .cache import PROPERTIES as CACHE_PROPERTIES
from .cache import CacheHarness
from .unit import UnitHarness

# The cache configuration of the proofs: 2 sets of 2 ways (a full set exercises pseudo-LRU
# replacement, a free way first-free allocation, a scan has two steps), 2-bit payloads; raw keys
# of 4 bits (1 set-index bit, 3 tag bits).
CACHE_SETS = 2
CACHE_WAYS = 2
CACHE_DATA = 2
RAW_KEY = 4
#: k-induction depth of the cache proofs (the auxiliary assertions make depth 3 enough).
CACHE_DEPTH = 4
#: BMC depth of the mutation checks on the cache (every counterexample is shorter).
CACHE_MUT_DEPTH = 12

CACHE_WHAT = {
    "hit_data": "hit returns the payload of the key's last fill",
    "isolation": "a lookup hits only its own key (VPID, EPT tag)",
    "inval": "no hit on a key an invalidation covered",
    "inval_precise": "an invalidation keeps the keys it does not cover",
    "unique": "no two valid entries hold the same key",
    "scan_clean": "no entry an invalidation matches survives its scan",
}

#: Structured key schemes proven with all properties in one job: the keys.py key and
#: invalidation construction of every cache of the unit.
STRUCTURED = ("tlb4k", "tlb2m", "tlb1g", "gpsc3", "gpsc2", "gpsc1", "epsc3", "epsc2", "epsc1",
              "nested")
#: Of those, the ones `make test` runs (one of each kind of key).
STRUCTURED_FAST = ("tlb4k", "gpsc1", "nested")


@dataclass
class Job:
    name: str
    build: object
    mode: str
    depth: int
    what: str
    kind: str = "proof"
    fast: bool = False
    expect: str = "PASS"
    engine: str = "smtbmc z3"
    memory: str = "map"
    timeout: int = 1800
    skip: int = 0           # bmc/cover: do not check the first `skip` steps (sby `skip`)
    target: str = ""        # mutation: the property (assertion message prefix) it must break


def _cache(scheme="raw", **kw):
    return CacheHarness(scheme=scheme, sets=CACHE_SETS, ways=CACHE_WAYS, key_width=RAW_KEY,
                        data_width=CACHE_DATA, **kw)


def cache_jobs():
    jobs = []
    for prop in CACHE_PROPERTIES:
        jobs.append(Job(f"cache-raw-{prop}", partial(_cache, props=(prop,)), "prove",
                        CACHE_DEPTH, CACHE_WHAT[prop], fast=True))
    for scheme in STRUCTURED:
        jobs.append(Job(f"cache-{scheme}-all", partial(_cache, scheme), "prove", CACHE_DEPTH,
                        f"all cache properties, {scheme} keys/invalidation from keys.py",
                        fast=scheme in STRUCTURED_FAST))
    jobs.append(Job("cache-raw-cover", partial(_cache, covers=True), "cover", 12,
                    "non-vacuity: hit, survivor, full cache, invalidation", kind="cover",
                    fast=True))
    for scheme in ("tlb4k", "gpsc1", "nested"):
        jobs.append(Job(f"cache-{scheme}-cover", partial(_cache, scheme, covers=True), "cover",
                        12, f"non-vacuity: hit, survivor, each invalidation kind ({scheme})",
                        kind="cover", fast=scheme == "tlb4k"))
    return jobs


def _cache_mutation(name, prop, scheme="raw", **kw):
    return Job(f"mut-cache-{name}", partial(_cache, scheme, props=(prop,), aux=False, **kw),
               "bmc", CACHE_MUT_DEPTH, f"{CACHE_WHAT[prop]} [{scheme}]", kind="mutation",
               expect="FAIL", fast=True, target=prop)


def cache_mutations():
    vpid_bits = 16
    return [
        _cache_mutation("fill-ignores-same-key", "unique", cache_cls=mut.FillIgnoresSameKey),
        _cache_mutation("fill-writes-wrong-entry", "hit_data",
                        cache_cls=mut.FillWritesWrongEntry),
        _cache_mutation("lookup-ignores-vpid", "isolation", "tlb4k",
                        cache_cls=mut.lookup_ignores_high_bits(vpid_bits)),
        _cache_mutation("ignores-invalidation", "inval", cache_cls=mut.IgnoresInvalidation),
        _cache_mutation("scan-ends-early", "scan_clean", cache_cls=mut.ScanEndsEarly),
        _cache_mutation("hits-during-scan", "inval", cache_cls=mut.HitsDuringScan),
        _cache_mutation("fills-during-scan", "inval", cache_cls=mut.FillsDuringScan),
        _cache_mutation("inval-vpid-ignores-vpid", "inval_precise", "tlb4k",
                        linear_inval=mut.linear_inval_vpid_ignores_vpid),
        _cache_mutation("inval-addr-wrong-vpid", "inval", "tlb2m",
                        linear_inval=mut.linear_inval_addr_ignored),
        _cache_mutation("invept-misses-nested-tlb", "inval", "nested",
                        physical_inval=mut.physical_inval_no_eptp),
    ]


# --- TranslationUnit ---------------------------------------------------------------------------

#: The unit configuration of the proofs: 2 walk contexts, one entry in every cache (3 TLB
#: arrays, 3 guest PSCs, 3 EPT PSCs, nested TLB), MAXPHYADDR 40 (the smallest the RTL builds
#: is 39: the EPT PML4E cache key needs M >= 39), 2-bit request tags; memory answers within 2
#: cycles, resp/mem_req ready at least every 2nd cycle.
UNIT = dict(contexts=2, maxphyaddr=40, tag_width=2, tlb_entries=(1, 1, 1),
            gpsc_entries=(1, 1, 1), epsc_entries=(1, 1, 1), nested_entries=1,
            mem_latency=2, ready_gap=2)
#: k-induction depth of the unit proofs (with the auxiliary assertions 3 is enough).
UNIT_DEPTH = 3
#: The configuration of the bounded (BMC) jobs: one walk context and only the 4K TLB array,
#: so that z3 reaches depth 20 in minutes (the unit's BMC cost grows ~1.6x per step).
UNIT_SMALL = dict(UNIT, contexts=1, tlb_entries=(1, 0, 0), gpsc_entries=(0, 0, 0),
                  epsc_entries=(0, 0, 0), nested_entries=0)
UNIT_BMC_DEPTH = 20
#: The lightest configuration in which a walk fills the TLB and a later request hits it: a
#: 1 GiB page (two reads), EPT off, paging on, memory answering in one cycle, always ready.
UNIT_HIT = dict(UNIT_SMALL, tlb_entries=(0, 0, 1), ept=False, paging=True, mem_latency=1,
                ready_gap=1, invalidations=False)
#: Progress bound of the `bounded` property: while a request waits, some memory request or
#: response is taken, or it is answered, at least every UNIT_GAP cycles.
UNIT_GAP = 10

UNIT_WHAT = {
    "once": "each response answers one accepted, unanswered request",
    "mem_tags": "no two outstanding reads share a tag; <= contexts outstanding",
    "stable": "mem_req and resp hold valid and payload until ready",
    "no_fault_writes": "no A/D write on behalf of a request that faults",
    "bounded": f"a waiting request sees progress every <= {UNIT_GAP} cycles",
    "writes_first": "A/D writes accepted before the response is offered",
}


def _unit(base=UNIT, **kw):
    return UnitHarness(**dict(base, **kw))


def unit_jobs():
    jobs = []
    for prop in ("once", "mem_tags", "stable", "no_fault_writes", "writes_first"):
        jobs.append(Job(f"unit-{prop}", partial(_unit, props=(prop,), lemmas=True), "prove",
                        UNIT_DEPTH, UNIT_WHAT[prop], fast=True))
    four = ("once", "mem_tags", "stable", "no_fault_writes")
    jobs.append(Job("unit1-all", partial(_unit, contexts=1, props=four, lemmas=True), "prove",
                    UNIT_DEPTH, "the four above, one walk context"))
    jobs.append(Job("unit-wide-all", partial(_unit, props=four, lemmas=True, narrow=False),
                    "prove", UNIT_DEPTH, "the four above, all 64 input bits free"))
    jobs.append(Job("unit-bounded", partial(_unit, UNIT_SMALL, props=("bounded",), gap=UNIT_GAP),
                    "bmc", UNIT_BMC_DEPTH, UNIT_WHAT["bounded"] + " (1 context)"))
    jobs.append(Job("unit-cover", partial(_unit, UNIT_SMALL, covers=True, mem_latency=1),
                    "cover", 20, "non-vacuity: walk+response, A/D write, fault, inval, stalls",
                    kind="cover"))
    jobs.append(Job("unit2-cover", partial(_unit, covers="contexts", mem_latency=1), "cover",
                    10, "non-vacuity: both contexts with a read outstanding", kind="cover",
                    fast=True))
    jobs.append(Job("unit-cover-hit", partial(_unit, UNIT_HIT, covers="hit"), "cover", 20,
                    "non-vacuity: a TLB hit answers a request after a walk", kind="cover"))
    return jobs


#: The environment of the unit mutation checks: the proofs' design configuration (UNIT, or
#: UNIT with one context as in `unit1-all`) in a restriction of the proofs' environment (EPT
#: off, paging on, no invalidations, memory answering in 1 cycle, always ready), so that the
#: counterexample is short and BMC reaches it quickly; a counterexample here is one of the
#: proof's too. Steps shorter than any counterexample are not checked (`skip`).
MUT_ENV = dict(ept=False, paging=True, invalidations=False, mem_latency=1, ready_gap=1)
UNIT1 = dict(UNIT, contexts=1)


def _unit_mutation(name, prop, unit_cls, base, depth, skip, **kw):
    return Job(f"mut-unit-{name}", partial(_unit, base, props=(prop,), unit_cls=unit_cls, **kw),
               "bmc", depth, UNIT_WHAT[prop], kind="mutation", expect="FAIL", skip=skip,
               fast=True, target=prop)


def unit_mutations():
    w = mut.unit_with_walker
    return [
        _unit_mutation("writes-on-fault", "no_fault_writes", w(mut.WalkerWritesOnFault),
                       dict(UNIT1, **MUT_ENV), 20, 10),
        _unit_mutation("read-tag-zero", "mem_tags", w(mut.WalkerReadTagZero),
                       dict(UNIT, **MUT_ENV), 12, 4),
        _unit_mutation("unstable-mem-req", "stable", w(mut.WalkerUnstableRequest),
                       dict(UNIT, **dict(MUT_ENV, ready_gap=2)), 12, 2),
        _unit_mutation("repeats-fault-response", "once", mut.UnitRepeatsFaultResponse,
                       dict(UNIT, **MUT_ENV), 12, 2),
        _unit_mutation("done-at-write-issue", "writes_first", w(mut.WalkerDoneAtIssue),
                       dict(UNIT_SMALL, tlb_entries=(0, 0, 0), ept=False, paging=True,
                            invalidations=False, mem_latency=1, ready_gap=3), 22, 10),
        _unit_mutation("loses-gp-response", "bounded", mut.UnitLosesGeneralProtection,
                       UNIT_SMALL, 20, 8, gap=UNIT_GAP),
    ]


def proofs():
    return cache_jobs() + unit_jobs() + vmx_jobs()


def mutations():
    return cache_mutations() + unit_mutations() + vmx_mutations()


# --- VmxUnit ------------------------------------------------------------------------------

from rtl.arch.vmx import FIELDS  # noqa: E402
from rtl.vmx.layouts import NOT_IN_WORKING_COPY  # noqa: E402

from .vmx import (VmxHarness, start_load_one_valid, start_root_copying,  # noqa: E402
                  start_root_fresh_vmcs, start_root_one_vmcs)

#: The VMX unit configuration of the proofs: 2 VMCS-cache slots, MAXPHYADDR 32 (the smallest
#: `VmEntryChecks` accepts).
VMX = dict(slots=2, maxphyaddr=32)
#: k-induction depth of the VMX proofs (the auxiliary assertions make 1 enough).
VMX_DEPTH = 1
#: Fields the VMREAD/VMWRITE proofs prefer in their class (see `vmrw_fields`).
_VMRW_CHOICE = ("VIRTUAL_PROCESSOR_ID", "PIN_BASED_VM_EXEC_CONTROL", "EPT_POINTER", "GUEST_RIP")


def vmrw_fields():
    """Fields of the VMREAD/VMWRITE proofs with F fixed (the other fields of the working copy are
    cut): one of every class of `rtl.arch.vmx.FIELDS` that VMWRITE can write (control, guest
    state, host state x 16-bit, 32-bit, 64-bit with a high access, natural width; the VM-exit
    information fields are read-only here), the field of `_VMRW_CHOICE` where the class has one,
    else the class's first; and the first writable field the working copy does not hold."""
    classes = {}
    for f in FIELDS:
        if not f.read_only:
            classes.setdefault((f.type, f.width), []).append(f.name)
    chosen = tuple(next((n for n in names if n in _VMRW_CHOICE), names[0])
                   for names in classes.values())
    # And one that the working copy does not hold (`NOT_IN_WORKING_COPY`: only the cache
    # memory has it).
    return chosen + (next(f.name for f in FIELDS
                          if not f.read_only and f.name in NOT_IN_WORKING_COPY),)


VMRW_FIELDS = vmrw_fields()
VMRW_FAST = ("EPT_POINTER",)

VMX_WHAT = {
    "mode": "mode changes only by VMXON, VMXOFF, VM entry, VM exit",
    "ptr": "current-VMCS pointer ~0 or aligned, < 2^M, not VMXON's",
    "unique": "no two valid VMCS-cache slots hold one VMCS",
    "vmrw": "VMREAD after VMWRITE returns the value (width, size, high)",
}


def _vmx(**kw):
    return VmxHarness(**dict(VMX, **kw))


def vmx_jobs():
    jobs = []
    for prop in ("mode", "ptr", "unique"):
        jobs.append(Job(f"vmx-{prop}", partial(_vmx, props=(prop,), lemmas=True), "prove",
                        VMX_DEPTH, VMX_WHAT[prop], fast=True))
    for name in VMRW_FIELDS:
        jobs.append(Job(f"vmx-vmrw-{name.lower()}",
                        partial(_vmx, props=("vmrw",), lemmas=True, field=name), "prove",
                        VMX_DEPTH, f"{VMX_WHAT['vmrw']}: {name}", fast=name in VMRW_FAST))
    jobs.append(Job("vmx-cover-vmxon", partial(_vmx, props=(), covers=("vmxon",), cut_wc=True),
                    "cover", 8, "non-vacuity: VMXON succeeds from reset", kind="cover",
                    fast=True))
    jobs.append(Job("vmx-cover-entry",
                    partial(_vmx, props=(), covers=("entry", "exit", "instr_exit"), cut_wc=True,
                            start="state", start_assume=start_root_fresh_vmcs),
                    "cover", 8, "non-vacuity: VM entry, VM exit, instruction exit (from a VMCS)",
                    kind="cover"))
    jobs.append(Job("vmx-cover-vmrw",
                    partial(_vmx, props=(), covers=("vmrw",), field="EPT_POINTER",
                            start="state", start_assume=start_root_one_vmcs),
                    "cover", 6, "non-vacuity: VMREAD after VMWRITE (from a VMCS)", kind="cover"))
    jobs.append(Job("vmx-cover-two-slots",
                    partial(_vmx, props=(), covers=("two_slots",), cut_wc=True, start="state",
                            start_assume=start_load_one_valid),
                    "cover", 6, "non-vacuity: a fill makes two slots valid (from a load)",
                    kind="cover"))
    return jobs


def _vmx_mutation(name, prop, unit_cls, depth, skip=0, fast=True, **kw):
    return Job(f"mut-vmx-{name}", partial(_vmx, props=(prop,), unit_cls=unit_cls,
                                          start="state", **kw),
               "bmc", depth, VMX_WHAT[prop] + " [from an invariant state]", kind="mutation",
               expect="FAIL", fast=fast, target=prop, skip=skip)


def vmx_mutations():
    return [
        _vmx_mutation("instr-exit-leaves-non-root", "mode", mut.VmxInstrExitLeavesNonRoot, 5),
        _vmx_mutation("vmptrld-skips-address-check", "ptr", mut.VmxVmptrldSkipsAddressCheck, 8,
                      skip=5, fast=False),
        _vmx_mutation("fill-tag-of-current", "unique", mut.VmxFillTagOfCurrent, 5),
        _vmx_mutation("high-write-clears-low", "vmrw", mut.VmxHighWriteClearsLow, 6,
                      field="EPT_POINTER", fast=False),
        _vmx_mutation("copy-ignores-writes", "vmrw", mut.VmxCopyIgnoresWrites, 4,
                      field="EPT_POINTER", start_assume=start_root_copying),
    ]
