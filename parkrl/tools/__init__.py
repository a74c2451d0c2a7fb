"""Tools the model can call in multi-turn rollouts."""
from parkrl.tools.base import Tool, ToolCall, ToolCallError, find_tool_calls, run_tool_call, stop_strings, tools_prompt
from parkrl.tools.builtin import BUILTIN_TOOLS, Calculator
from parkrl.tools.sandboxed import EpisodeSandbox, PythonTool, SandboxTool, TerminalTool, ThinkTool

__all__ = ["BUILTIN_TOOLS", "Calculator", "EpisodeSandbox", "PythonTool", "SandboxTool", "TerminalTool", "ThinkTool",
           "Tool", "ToolCall", "ToolCallError", "find_tool_calls", "run_tool_call", "stop_strings", "tools_prompt"]
