"""An example sandbox-backed environment, written as a user would: a module of your own, no change
to parkrl.

The agent gets a shell in its own sandbox session (parkrl's `terminal` tool) and a question about
files there (`data.task=terminal_files`). Its final answer is checked *in the sandbox*: the
environment runs the task's reference command (`sample["check"]`) in the same session, after the
agent is done, and compares outputs, so the reward needs no answer key in the data. (The session is opened at the first use, gets the task's
files first, and is closed when the episode ends, also after an error.)

    PYTHONPATH=examples python -m parkrl.train data.task=terminal_files data.system_prompt="" \\
        reward.cls=parkrl.rewards.MatchAnswerReward env.cls=checked_shell_env.CheckedShell \\
        env.final_reward=false env.max_turns=3 sandbox.servers=2
"""
import parkrl
from parkrl.rewards import extract_answer
from parkrl.tools import EpisodeSandbox, TerminalTool, find_tool_calls, run_tool_call, stop_strings, tools_prompt


class CheckedShell(parkrl.Environment):
    uses_sandbox = True  # checked before step 1: the run must have a sandbox service

    def __init__(self) -> None:
        self.sandbox = EpisodeSandbox(setup=self._write_files)
        self.terminal = TerminalTool(timeout_s=5)
        self.terminal.bind(self.sandbox)
        self.tools = {"terminal": self.terminal}
        self.stop = stop_strings("tag", [self.terminal])

    def _write_files(self, sandbox, session_id):
        for path, text in self.files.items():
            sandbox.write_file(path, text)

    def reset(self, sample):
        self.files, self.check = sample["files"], sample["check"]
        system = "Use the terminal to look at the files, then answer with only the number.\n\n" + tools_prompt(
            [self.terminal], "tag")
        return [{"role": "system", "content": system}, {"role": "user", "content": sample["question"]}]

    def step(self, assistant_text):
        calls = find_tool_calls(assistant_text, "tag", self.tools)
        if calls:
            text = "\n".join(run_tool_call(c, self.tools)[0] for c in calls)
            return parkrl.StepResult([{"role": "tool", "content": text}], info={"tool_calls": len(calls)})
        answer = extract_answer(assistant_text)
        expected = self.sandbox.exec(self.check, timeout_s=5).stdout.strip()
        return parkrl.StepResult([], reward=float(answer is not None and answer == expected), done=True)

    def close(self):
        self.sandbox.close()
