"""Token ids of the turns between assistant turns, from the model's own chat template.

Multi-turn rollouts append each turn's tokens to the trajectory and never re-tokenise earlier
turns: the assistant's tokens are exactly the ids the engine sampled (re-tokenising decoded
text can give different ids: "drift"), and only the environment's turns are tokenised, here.
"""
from __future__ import annotations


class TurnTokens:
    """Renders observation turns as token ids that follow an assistant turn.

    The template is rendered for [user, assistant] and for [user, assistant, *observation] with
    the generation prompt; the difference is what the template writes after an assistant turn
    up to the next assistant header. The assistant turn's own closing text (e.g. `<|im_end|>`)
    is included, minus the EOS token when the engine already sampled it.
    """

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        mark = "PARKRL-ASSISTANT-TURN"
        self._base = [{"role": "user", "content": "U"}, {"role": "assistant", "content": mark}]
        self._base_text = tokenizer.apply_chat_template(self._base, tokenize=False)
        self._closing = self._base_text[self._base_text.rindex(mark) + len(mark):]  # e.g. "<|im_end|>\n"
        self.eos_id = tokenizer.eos_token_id

    def observation_ids(self, messages: list[dict[str, str]], assistant_ended_with_eos: bool) -> list[int]:
        """Ids to append after an assistant turn: its closing text, the observation messages and
        the header of the next assistant turn."""
        text = self.tok.apply_chat_template(self._base + messages, tokenize=False, add_generation_prompt=True)
        if not text.startswith(self._base_text):
            raise ValueError("the chat template renders earlier turns differently once more turns follow; "
                             "multi-turn rollouts need a template that only appends")
        closing = self._closing
        eos = self.tok.eos_token
        if assistant_ended_with_eos and closing.startswith(eos):
            closing = closing[len(eos):]
        return self.tok.encode(closing + text[len(self._base_text):], add_special_tokens=False)
