"""Tools the model can call, and the call format it uses.

The model writes a call as a tag around JSON (the format Qwen, Hermes and SmolLM2's larger
siblings use; SmolLM2-135M's ChatML template has no tool syntax of its own):

    <tool_call>{"name": "calculator", "arguments": {"expression": "37 * 41"}}</tool_call>

and gets the result back in a `tool` turn. Anything malformed becomes an observation that
says what was wrong; it never raises into the rollout.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|$)", re.S)


class Tool:
    """A callable the model may use. Subclass it: set `name`, `description` and `parameters`
    (a JSON schema of the arguments object) and implement `__call__(**arguments) -> str`.

        class Weather(parkrl.Tool):
            name = "weather"
            description = "Current temperature of a city in Celsius."
            parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

            def __call__(self, city: str) -> str:
                return str(lookup(city))
    """

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    def __call__(self, **arguments: Any) -> str:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """The tool as listed to the model."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


class ToolCallError(ValueError):
    """A call the model wrote that cannot be run; the message is shown to the model."""


def find_tool_calls(text: str) -> list[ToolCall | ToolCallError]:
    """Every `<tool_call>...</tool_call>` in `text`, parsed, or the error that describes it."""
    out: list[ToolCall | ToolCallError] = []
    for match in _CALL.finditer(text):
        body = match.group(1).strip()
        if not match.group(0).endswith(CALL_CLOSE):
            out.append(ToolCallError(f"the tool call is not closed with {CALL_CLOSE}"))
            continue
        try:
            call = json.loads(body)
        except json.JSONDecodeError as e:
            out.append(ToolCallError(f"the tool call is not valid JSON ({e.msg}); write "
                                     f'{CALL_OPEN}{{"name": ..., "arguments": {{...}}}}{CALL_CLOSE}'))
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            out.append(ToolCallError('the tool call needs a "name" string'))
            continue
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict):
            out.append(ToolCallError('"arguments" must be a JSON object'))
            continue
        out.append(ToolCall(call["name"], arguments))
    return out


def run_tool_call(call: ToolCall | ToolCallError, tools: dict[str, Tool]) -> tuple[str, bool]:
    """The observation for one call and whether it ran without error."""
    if isinstance(call, ToolCallError):
        return f"error: {call}", False
    tool = tools.get(call.name)
    if tool is None:
        return f"error: unknown tool {call.name!r}; available: {', '.join(sorted(tools))}", False
    missing = [k for k in tool.parameters.get("required", []) if k not in call.arguments]
    unknown = [k for k in call.arguments if k not in tool.parameters.get("properties", {})]
    if missing or unknown:
        return (f"error: {call.name} takes {sorted(tool.parameters.get('properties', {}))}"
                + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else "")), False
    try:
        return str(tool(**call.arguments)), True
    except Exception as e:  # noqa: BLE001 - the model sees what went wrong
        return f"error: {type(e).__name__}: {e}", False


def tools_prompt(tools: list[Tool]) -> str:
    """The system-prompt section that lists the tools and the call format."""
    listing = "\n".join(json.dumps(t.schema()) for t in tools)
    return (f"You can call tools. To call one, write {CALL_OPEN}{{\"name\": <tool name>, \"arguments\": "
            f"<arguments object>}}{CALL_CLOSE} and wait for the result. Tools:\n{listing}")
