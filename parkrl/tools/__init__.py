"""Tools the model can call in multi-turn rollouts."""
from parkrl.tools.base import Tool, ToolCall, ToolCallError, find_tool_calls, run_tool_call, stop_strings, tools_prompt
from parkrl.tools.builtin import BUILTIN_TOOLS, Calculator, PythonTool

__all__ = ["BUILTIN_TOOLS", "Calculator", "PythonTool", "Tool", "ToolCall", "ToolCallError", "find_tool_calls",
           "run_tool_call", "stop_strings", "tools_prompt"]
