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
