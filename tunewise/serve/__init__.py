"""`tunewise serve`: one base model, many LoRA adapters chosen per request, behind an OpenAI-compatible API."""
