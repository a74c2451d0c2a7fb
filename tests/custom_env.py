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
