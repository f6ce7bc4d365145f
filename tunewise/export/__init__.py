"""`tunewise export`: a merged model as one GGUF file for llama.cpp / Ollama, or an adapter as a GGUF LoRA.

vocab.py turns the tokenizer into llama.cpp's tokenizer metadata, llama.py writes a Llama model, lora.py a LoRA
adapter, verify.py reads a written file back with transformers' GGUF loader, and run.py resolves what the user
pointed at and writes atomically.
"""
