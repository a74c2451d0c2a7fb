"""A user's own environment (selected by `env.cls=custom_env.AskTwice`): after the first answer
it asks for a second try, then ends, paying 0.1 per turn whose text is short."""
import parkrl


class AskTwice(parkrl.Environment):
    def reset(self, sample):
        self.turn = 0
        return [{"role": "user", "content": sample["question"]}]

    def step(self, assistant_text):
        self.turn += 1
        reward = 0.1 if len(assistant_text) < 40 else 0.0
        if self.turn >= 2:
            return parkrl.StepResult([], reward=reward, done=True)
        return parkrl.StepResult([{"role": "user", "content": "Are you sure? Answer again."}], reward=reward,
                                 info={"tool_calls": 1})


class SandboxEcho(parkrl.Environment):
    """Whatever the model writes goes through the sandbox service: saved as a file in the episode's
    session (after the task's files), counted there with `wc -c`; pays 1 when the sandbox's count
    is the text's byte length, so reward 1.0 means every episode's round trip worked."""

    uses_sandbox = True

    def __init__(self):
        from parkrl.tools import EpisodeSandbox

        self.sandbox = EpisodeSandbox(setup=lambda sandbox, sid: [sandbox.write_file(p, t) for p, t in self.files.items()])

    def reset(self, sample):
        self.files = sample.get("files", {})
        return [{"role": "user", "content": sample["question"]}]

    def step(self, assistant_text):
        self.sandbox.write_file("answer.txt", assistant_text)
        r = self.sandbox.exec(f"wc -c < answer.txt; ls {' '.join(self.files) or '.'} | wc -l", timeout_s=10)
        size, listed = (int(x) for x in r.stdout.split())
        ok = size == len(assistant_text.encode()) and listed == max(len(self.files), listed)
        return parkrl.StepResult([], reward=float(ok), done=True, info={"sandbox_checks": 1})

    def close(self):
        self.sandbox.close()


class Countdown(parkrl.Environment):
    """Deterministic (for comparing in-process and remote episodes): two turns, rewards and
    observations from the text. A sample whose question is "raise" raises in step, "hang" sleeps
    5 s in step (past a short env.step_timeout_s)."""

    stop = ("</done>",)

    def reset(self, sample):
        self.turn, self.question = 0, sample["question"]
        return [{"role": "user", "content": self.question}]

    def step(self, assistant_text):
        import time

        if self.question == "raise":
            raise KeyError("broken state")
        if self.question == "hang":
            time.sleep(5)
        self.turn += 1
        done = self.turn >= 2
        observation = [] if done else [{"role": "user", "content": f"turn {self.turn}: {len(assistant_text)} chars"}]
        return parkrl.StepResult(observation, reward=len(assistant_text) / 100, done=done, info={"tool_calls": 1})
