"""A finished run -> Hugging Face folders: the merged model (transformers), the LoRA adapter
(PEFT) and, for a keras-hub base, the base model. `python -m runner.export RUN_DIR`."""
