"""The built-in tools by name: `calculator` (here), and `python`, `terminal` and `think`
(parkrl.tools.sandboxed: through the sandbox service)."""
from __future__ import annotations

import ast
import math
import operator

from parkrl.tools.base import Tool
from parkrl.tools.browser import BrowserTool
from parkrl.tools.sandboxed import PythonTool, TerminalTool, ThinkTool

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max}


MAX_BITS = 4096  # results beyond this are refused before they are computed (no worker stalls)


def _check_size(op: ast.operator, left, right) -> None:
    """Refuse operations whose result would exceed MAX_BITS, estimated from the operands."""
    bits = lambda x: abs(int(x)).bit_length() if abs(x) >= 1 else 1  # noqa: E731
    if isinstance(op, ast.Pow) and abs(left) > 1 and (abs(right) > MAX_BITS or bits(left) * abs(right) > MAX_BITS):
        raise ValueError("the result is too large")
    if isinstance(op, ast.Mult) and bits(left) + bits(right) > MAX_BITS:
        raise ValueError("the result is too large")


class Calculator(Tool):
    """Evaluates an arithmetic expression (+ - * / // % **, parentheses, sqrt/abs/round/min/max)
    by walking its syntax tree: nothing else is ever executed."""

    name = "calculator"
    description = "Evaluate an arithmetic expression, e.g. (37 * 41) - 5."
    parameters = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}

    def __call__(self, expression: str) -> str:
        if len(expression) > 200:
            raise ValueError("expression longer than 200 characters")
        value = self._eval(ast.parse(str(expression), mode="eval").body)
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            value = int(value)
        return str(value)

    def _eval(self, node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = self._eval(node.left), self._eval(node.right)
            _check_size(node.op, left, right)
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](self._eval(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
            return _FUNCS[node.func.id](*[self._eval(a) for a in node.args])
        raise ValueError(f"unsupported expression: {ast.unparse(node)}")


BUILTIN_TOOLS: dict[str, type[Tool]] = {"calculator": Calculator, "python": PythonTool, "terminal": TerminalTool,
                                        "think": ThinkTool, "browser": BrowserTool}
