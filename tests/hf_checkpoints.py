"""Tiny Hugging Face checkpoints, written by transformers' own save_pretrained, one per family
the runner trains, with a real tokenizer trained here (SentencePiece for the Gemma and Mistral
families, byte-level BPE for Llama 3 and Qwen), so tests import what a user downloads."""

from __future__ import annotations

import io
from pathlib import Path

from runner.families import FAMILIES

VOCAB = 320  # tokenizer and model vocabulary size
TEXT = [f"{w} {i} {w[::-1]} the quick brown fox jumps over the lazy dog {i * 7}"
        for i, w in enumerate(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta",
                               "theta", "iota", "kappa"] * 20)]

# Hugging Face model_type -> (transformers config class, extra config fields, tokenizer kind):
# every model type of every family, as the family module states it (Family.tiny), so a new
# family's module brings its tiny checkpoint into every test that loops over these.
KINDS = {model_type: (tiny.config_class, tiny.fields, tiny.tokenizer)
         for family in FAMILIES.values() for model_type, tiny in family.tiny.items()}


def _sentencepiece(path: Path, pieces: dict, extra: list, **normalizer) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT), model_writer=model, vocab_size=VOCAB, model_type="bpe",
        user_defined_symbols=extra, byte_fallback=False, minloglevel=2, **pieces, **normalizer)
    (path / "tokenizer.model").write_bytes(model.getvalue())


# The split Qwen 2/3 and Llama 3 tokenizers make before byte-level BPE (their tokenizer.json):
# digits alone (Qwen) or in threes (Llama 3), so no merge joins a space and a digit.
SPLITS = {
    "qwen": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
              r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def _bpe(path: Path, special: list, bos, eos, split: str) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLITS[split]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(special), special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    tok.add_special_tokens(special)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
    fast.save_pretrained(str(path))


def _tokenizer(kind: str, path: Path) -> None:
    if kind == "gemma_spm":
        # Gemma's own normalizer: text as it is (no dummy prefix, spaces kept), "\n" a piece.
        _sentencepiece(path, dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
                                  eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>"),
                       ["<start_of_turn>", "<end_of_turn>", "\n"],
                       normalization_rule_name="identity", add_dummy_prefix=False,
                       remove_extra_whitespaces=False)
    elif kind == "mistral_spm":
        # Mistral 7B v0.1's normalizer: a dummy prefix, spaces kept; [INST] is plain text.
        _sentencepiece(path, dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1), [],
                       normalization_rule_name="identity", remove_extra_whitespaces=False)
    elif kind == "llama3_bpe":
        _bpe(path, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"], "<|begin_of_text|>", "<|end_of_text|>",
             "llama3")
    else:
        _bpe(path, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|endoftext|>",
             "qwen")


def make(kind: str, path: Path, kv_heads: int = 2, seed: int = 0) -> Path:
    """A checkpoint folder of `kind` (a key of KINDS): config.json, model.safetensors (float32)
    and tokenizer files, with 2 layers, 4 query heads and `kv_heads` key/value heads."""
    import torch
    import transformers

    config_cls, extra, tokenizer = KINDS[kind]
    config = getattr(transformers, config_cls)(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
        **extra)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():  # norms start at 0 or 1 in transformers; random ones test the map
        for name, tensor in model.named_parameters():
            if tensor.ndim == 1:
                tensor.uniform_(0.5, 1.5)
    path = Path(path)
    model.save_pretrained(str(path))
    _tokenizer(tokenizer, path)
    return path


def make_tokenizer(kind: str, path: Path) -> Path:
    """Only config.json and the tokenizer files of `kind`: enough for a tokenizer, no weights."""
    import transformers

    config_cls, extra, tokenizer = KINDS[kind]
    config = getattr(transformers, config_cls)(vocab_size=VOCAB, **extra)
    path = Path(path)
    config.save_pretrained(str(path))
    _tokenizer(tokenizer, path)
    return path


def hf_logits(path: Path, token_ids) -> "numpy.ndarray":  # noqa: F821
    """transformers' float32 logits for a batch of token ids."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path),
                                                              torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(token_ids)).logits.numpy()
