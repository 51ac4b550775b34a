"""Arithmetic on numbers, for wiring parameters together (e.g. steps = 2 * base)."""

import math
from typing import Literal

from nodegraph import node

Operation = Literal["add", "subtract", "multiply", "divide", "power", "min", "max"]

_OPS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "power": lambda a, b: a**b,
    "min": min,
    "max": max,
}


@node("core/math", category="math", display_name="Math")
def math_op(a: float, b: float = 0.0, operation: Operation = "add") -> float:
    """Apply `operation` to a and b. Division by zero and non-finite results are errors."""
    if operation == "divide" and b == 0:
        raise ZeroDivisionError("b is 0")
    result = float(_OPS[operation](a, b))
    if not math.isfinite(result):
        raise ArithmeticError(f"{operation}({a}, {b}) is not finite")
    return result


@node("core/to_int", category="math", display_name="To integer")
def to_int(value: float, rounding: Literal["round", "floor", "ceil"] = "round") -> int:
    """Convert a number to an integer."""
    return int({"round": round, "floor": math.floor, "ceil": math.ceil}[rounding](value))
