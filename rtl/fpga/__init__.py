"""FPGA tops: the board self-test of the translation unit, the ECP5 PLL, a UART transmitter.

Built by `vtx synth` (sim/synth.py) for the ULX3S; see docs/fpga.md.
"""

from .pll import ECP5PLL, PLLClockDomain, PLLParams, pll_params
from .selftest import (
    ImageMemory,
    MemoryImage,
    SelfTest,
    SelfTestBoard,
    UnitBoard,
    UnitHarness,
    Vector,
    image_checksum,
)
from .uart import LinePrinter, UARTTx, uart_divisor

__all__ = [
    "ECP5PLL", "PLLClockDomain", "PLLParams", "pll_params",
    "ImageMemory", "MemoryImage", "SelfTest", "SelfTestBoard", "UnitBoard", "UnitHarness",
    "Vector", "image_checksum",
    "LinePrinter", "UARTTx", "uart_divisor",
]
