"""Tools the model can call, and the call format it uses.

Two call formats (SmolLM2-135M's ChatML template has no tool syntax of its own):

- "json", the format Qwen, Hermes and SmolLM2's larger siblings are trained on:
      <tool_call>{"name": "calculator", "arguments": {"expression": "37 * 41"}}</tool_call>
- "tag", one tag per tool, for small models: the tool's name as the tag around either its
  single required argument as plain text or a JSON object of its arguments:
      <calculator>37 * 41</calculator>      <python>print(2 ** 10)</python>

The result comes back in a `tool` turn. Anything malformed becomes an observation that says
what was wrong; it never raises into the rollout.
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


def find_tool_calls(text: str, call_format: str = "json", tools: dict[str, "Tool"] | None = None) -> list[ToolCall | ToolCallError]:
    """Every tool call in `text`, parsed, or the error that describes it. The "tag" format
    needs the tools (their names are the tags)."""
    if call_format == "tag":
        return _tag_calls(text, tools or {})
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


def _tag_calls(text: str, tools: dict[str, "Tool"]) -> list[ToolCall | ToolCallError]:
    found: list[tuple[int, ToolCall | ToolCallError]] = []  # (position in text, call): text order
    for name, tool in tools.items():
        for match in re.finditer(f"<{re.escape(name)}>(.*?)(</{re.escape(name)}>|$)", text, re.S):
            found.append((match.start(), _tag_call(name, tool, match.group(1).strip(), bool(match.group(2)))))
    return [call for _, call in sorted(found, key=lambda x: x[0])]


def _tag_call(name: str, tool: "Tool", body: str, closed: bool) -> ToolCall | ToolCallError:
    if not closed:
        return ToolCallError(f"the {name} call is not closed with </{name}>")
    if body.startswith("{"):
        try:
            arguments = json.loads(body)
        except json.JSONDecodeError as e:
            return ToolCallError(f"the {name} arguments are not valid JSON ({e.msg})")
        return ToolCall(name, arguments) if isinstance(arguments, dict) else ToolCallError(
            f"the {name} arguments must be a JSON object")
    required = tool.parameters.get("required", [])
    if len(required) != 1:
        return ToolCallError(f"{name} takes a JSON object of arguments {sorted(tool.parameters.get('properties', {}))}")
    return ToolCall(name, {required[0]: body})


def stop_strings(call_format: str, tools: list["Tool"]) -> tuple[str, ...]:
    """Where an assistant turn ends to wait for a tool's result."""
    return (CALL_CLOSE,) if call_format == "json" else tuple(f"</{t.name}>" for t in tools)


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


def tools_prompt(tools: list[Tool], call_format: str = "json") -> str:
    """The system-prompt section that lists the tools and the call format."""
    if call_format == "tag":
        lines = [f"<{t.name}>{(t.parameters.get('required') or ['arguments'])[0]}</{t.name}>: {t.description}"
                 for t in tools]
        return "You can use tools; write a call and wait for its result:\n" + "\n".join(lines)
    listing = "\n".join(json.dumps(t.schema()) for t in tools)
    return (f"You can call tools. To call one, write {CALL_OPEN}{{\"name\": <tool name>, \"arguments\": "
            f"<arguments object>}}{CALL_CLOSE} and wait for the result. Tools:\n{listing}")
