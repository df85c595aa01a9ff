"""Running models: tokenizer loading (and, with the inference issue, the interpreter and generate loop)."""
