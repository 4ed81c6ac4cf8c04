"""Worked example intent handlers. Each reads the conversation through its ``Session`` and gets
its tools through its constructor; none keeps state of its own, so any region can continue."""

from dialog.handlers.block_card import BlockCardHandler
from dialog.handlers.order_status import InquireOrderHandler

__all__ = ["BlockCardHandler", "InquireOrderHandler"]
