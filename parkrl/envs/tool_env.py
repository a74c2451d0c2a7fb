"""The built-in tool-use environment: a task question, tools the model may call, a final answer."""
from __future__ import annotations

from typing import Any

from parkrl.envs.base import Environment, StepResult
from parkrl.tools.base import CALL_CLOSE
from parkrl.tools import BUILTIN_TOOLS, Tool, find_tool_calls, run_tool_call, tools_prompt


class ToolEnvironment(Environment):
    """Each assistant turn either calls tools (their results come back in a "tool" turn) or
    answers; the first turn without a tool call ends the episode, and the run's reward function
    scores that answer. Turn rewards are 0, so the tools earn reward only by helping.

    env.args: tools (names of built-in tools, default calculator and python), system_prompt
    (put before the tool listing), tool_args ({tool name: constructor kwargs}).
    """

    stop = (CALL_CLOSE,)  # the model stops after a call and waits for its result

    def __init__(self, tools: list[str] = ("calculator", "python"), system_prompt: str = "",
                 tool_args: dict[str, dict[str, Any]] | None = None) -> None:
        unknown = [t for t in tools if t not in BUILTIN_TOOLS]
        if unknown:
            raise ValueError(f"env.args.tools: unknown tools {unknown}; built in: {sorted(BUILTIN_TOOLS)}")
        self.tools: dict[str, Tool] = {n: BUILTIN_TOOLS[n](**(tool_args or {}).get(n, {})) for n in tools}
        self.system_prompt = system_prompt

    def reset(self, sample: dict[str, Any]) -> list[dict[str, str]]:
        system = "\n\n".join(p for p in (self.system_prompt, tools_prompt(list(self.tools.values()))) if p)
        return [{"role": "system", "content": system}, {"role": "user", "content": sample["question"]}]

    def step(self, assistant_text: str) -> StepResult:
        calls = find_tool_calls(assistant_text)
        if not calls:
            return StepResult([], done=True)
        results = [run_tool_call(c, self.tools) for c in calls]
        content = "\n".join(text for text, _ in results)
        return StepResult([{"role": "tool", "content": content}],
                          info={"tool_calls": len(calls), "tool_errors": sum(not ok for _, ok in results)})
