r"""pytest entry point of the translation unit's cocotb tests (tb/test_translation_unit.py).

Every item runs some cocotb tests against one cached Verilator model of `TranslationUnit()`
(built once by sim.flow, whichever item or xdist worker comes first). The long random
differential test is split into 4 items of VTX_REQUESTS/4 requests (default 5000) with seeds
VTX_SEED .. VTX_SEED+3 (default 1..4) so that ``pytest -n 2`` runs them in parallel.

    .venv/bin/python -m pytest -n 2 tests/test_translation_rtl.py
    VTX_SEED=7 VTX_REQUESTS=100000 \
        .venv/bin/python -m pytest -n 2 tests/test_translation_rtl.py -k random
    WAVES=1 .venv/bin/python -m pytest tests/test_translation_rtl.py -k throughput  # build/waves/
    VTX_UNCACHED=1 .venv/bin/python -m pytest tests/test_translation_rtl.py -k uncached

The last one builds a second configuration (every cache of 0 entries) and checks that every
response's mem_reads is exactly the model's uncached count; it is skipped unless VTX_UNCACHED=1,
to keep the default run to one Verilator build.
"""

from __future__ import annotations

import os

import pytest

from tb import test_translation_unit as tu

RANDOM_PARTS = 4


@pytest.fixture(scope="session")
def model():
    """The Verilator model (built here, so the build shows as set-up time, not as a test's)."""
    return tu.build_model()


@pytest.mark.parametrize("part", range(RANDOM_PARTS))
def test_random_differential(model, part):
    tu.run_random(part, RANDOM_PARTS)


def test_memory_port_stress(model):
    tu.run_stress()


def test_directed_a(model):
    tu.run_tests(tu.DIRECTED[:5])


def test_directed_b(model):
    tu.run_tests(tu.DIRECTED[5:])


def test_invalidation(model):
    tu.run_tests(tu.INVALIDATION)


def test_throughput_and_shared_walks(model):
    tu.run_tests(tu.PERFORMANCE)


@pytest.mark.skipif(not os.environ.get("VTX_UNCACHED"),
                    reason="a second Verilator build; set VTX_UNCACHED=1 to run it")
def test_random_uncached_exact_reads():
    tu.run_random_uncached()
