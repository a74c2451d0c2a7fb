"""The built-in tool-use environment: a task question, tools the model may call, a final answer."""
from __future__ import annotations

from typing import Any

from parkrl.config import ConfigError
from parkrl.envs.base import Environment, StepResult
from parkrl.tools import BUILTIN_TOOLS, Tool, ToolCall, find_tool_calls, run_tool_call, stop_strings, tools_prompt
from parkrl.tools.sandboxed import EpisodeSandbox, SandboxTool


class ToolEnvironment(Environment):
    """Each assistant turn either calls tools (their results come back in a "tool" turn) or
    answers; the first turn without a tool call ends the episode, and the run's reward function
    scores that answer. Turn rewards are 0, so the tools earn reward only by helping.

    Tools that run in a sandbox (`terminal`) share one session of the sandbox service per
    episode, opened at their first call and closed when the episode ends; a task sample's
    `files` ({path: text}) are written into that session's workspace first.

    env.args:
      tools          names of built-in tools: calculator, python, terminal, think (default calculator and python)
      call_format    "json" (<tool_call>{...}</tool_call>) or "tag" (<calculator>...</calculator>)
      system_prompt  put before the tool listing
      examples       chat messages inserted after the system prompt: a worked demonstration
                     (a small model rarely calls a tool it has only seen described)
      tool_args      {tool name: constructor kwargs}, e.g. {python: {wall_s: 5}}
    """

    def __init__(self, tools: list[str] = ("calculator", "python"), call_format: str = "json",
                 system_prompt: str = "", examples: list[dict[str, str]] | None = None,
                 tool_args: dict[str, dict[str, Any]] | None = None) -> None:
        unknown = [t for t in tools if t not in BUILTIN_TOOLS]
        if unknown:
            raise ConfigError(f"env.args.tools: unknown tools {unknown}; built in: {sorted(BUILTIN_TOOLS)}")
        if call_format not in ("json", "tag"):
            raise ConfigError(f"env.args.call_format={call_format!r}: choose json or tag")
        self.tools: dict[str, Tool] = {n: BUILTIN_TOOLS[n](**(tool_args or {}).get(n, {})) for n in tools}
        self.call_format, self.system_prompt = call_format, system_prompt
        self.examples = [dict(m) for m in examples or []]
        self.stop = stop_strings(call_format, list(self.tools.values()))  # wait for the result after a call
        self.uses_sandbox = any(getattr(t, "uses_sandbox", False) for t in self.tools.values())
        self.sandbox = EpisodeSandbox(setup=self._write_files)
        for tool in self.tools.values():
            if isinstance(tool, SandboxTool):
                tool.bind(self.sandbox)
        self._files: dict[str, str] = {}

    def _write_files(self, sandbox: EpisodeSandbox, session_id: str) -> None:
        for path, text in self._files.items():
            sandbox.write_file(path, text)

    def close(self) -> None:
        self.sandbox.close()

    def reset(self, sample: dict[str, Any]) -> list[dict[str, str]]:
        self._files = dict(sample.get("files") or {})
        listing = tools_prompt(list(self.tools.values()), self.call_format)
        system = "\n\n".join(p for p in (self.system_prompt, listing) if p)
        return [{"role": "system", "content": system}, *self.examples, {"role": "user", "content": sample["question"]}]

    def step(self, assistant_text: str) -> StepResult:
        calls = find_tool_calls(assistant_text, self.call_format, self.tools)
        if not calls:
            return StepResult([], done=True)
        results = [run_tool_call(c, self.tools) for c in calls]
        content = "\n".join(text for text, _ in results)
        info = {"tool_calls": len(calls), "tool_errors": sum(not ok for _, ok in results)}
        if "think" in self.tools:  # thoughts are counted apart from the calls that act (env/think_calls_mean)
            info["think_calls"] = sum(isinstance(c, ToolCall) and c.name == "think" for c in calls)
            info["tool_calls"] -= info["think_calls"]
        return StepResult([{"role": "tool", "content": content}], info=info)
