"""FPGA tops: the board self-test of the translation unit, the whole system running the demo, one
block alone in a shift-register harness, the ECP5 PLL, a UART transmitter.

Built by `vtx synth` (sim/synth/) for the ULX3S; see docs/fpga.md.
"""

from .board import BAUD, LED_COUNT, board_uart_divisor, drive_leds_and_tx
from .harness import HarnessBoard, ShiftHarness
from .pll import ECP5PLL, PLLClockDomain, PLLParams, pll_params
from .selftest import (
    ImageMemory,
    MemoryImage,
    SelfTest,
    SelfTestBoard,
    Vector,
    image_checksum,
)
from .system_top import SystemBoard, SystemTop
from .uart import LinePrinter, UARTTx, uart_divisor

__all__ = [
    "BAUD", "LED_COUNT", "board_uart_divisor", "drive_leds_and_tx",
    "ECP5PLL", "PLLClockDomain", "PLLParams", "pll_params",
    "ImageMemory", "MemoryImage", "SelfTest", "SelfTestBoard", "HarnessBoard", "ShiftHarness",
    "Vector", "image_checksum", "SystemBoard", "SystemTop",
    "LinePrinter", "UARTTx", "uart_divisor",
]
