"""Model loading: resolving `model.path`, including the embedded SmolLM2 checkpoint."""
from parkrl.models.chat import chat_prompt_ids
from parkrl.models.loading import EMBEDDED_MODELS, load_causal_lm, load_tokenizer, resolve_dtype, resolve_model_path

__all__ = ["EMBEDDED_MODELS", "chat_prompt_ids", "load_causal_lm", "load_tokenizer", "resolve_dtype", "resolve_model_path"]
