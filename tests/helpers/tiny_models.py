"""Tiny Hugging Face models and tokenizers built from configs (random weights), saved like real ones."""

from pathlib import Path

import torch
import transformers as T
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

N_LAYERS = 3
TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a feature atlas explains every feature of a sparse autoencoder",
    "language models read text one token at a time",
    "Hello world, this is a tiny tokenizer for tests.",
]
SENTENCE = "the lazy fox read every token of a tiny text"


def byte_level_tokenizer() -> T.PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXT * 4, trainer)
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def metaspace_tokenizer() -> T.PreTrainedTokenizerFast:
    """Sentencepiece-style pieces (▁word), as Llama 2 and Gemma write them."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tok.train_from_iterator(TEXT * 4, trainer)
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def wordpiece_tokenizer() -> T.PreTrainedTokenizerFast:
    words = sorted({w for line in TEXT for w in line.lower().replace(",", " ").replace(".", " ").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "un", "##believ", "##ably", *words]
    return T.BertTokenizerFast(vocab={piece: i for i, piece in enumerate(vocab)})


def tiny_config(arch: str, vocab: int):
    decoder = dict(
        num_hidden_layers=N_LAYERS, hidden_size=16, intermediate_size=24, num_attention_heads=4,
        num_key_value_heads=2, head_dim=6, vocab_size=vocab, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    if arch == "gpt2":
        return T.GPT2Config(n_layer=N_LAYERS, n_embd=16, n_head=4, vocab_size=vocab, n_positions=64, bos_token_id=0)
    if arch == "bert":
        return T.BertConfig(
            num_hidden_layers=N_LAYERS, hidden_size=16, intermediate_size=24, num_attention_heads=4, vocab_size=vocab
        )
    return {"llama": T.LlamaConfig, "gemma2": T.Gemma2Config, "qwen2": T.Qwen2Config, "mistral": T.MistralConfig}[arch](
        **decoder
    )


def save_tiny(arch: str, folder: Path) -> Path:
    folder.mkdir(parents=True)
    if arch == "gpt2":
        tokenizer = byte_level_tokenizer()
    elif arch == "bert":
        tokenizer = wordpiece_tokenizer()
    else:
        tokenizer = metaspace_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(arch, len(tokenizer))
    model = (T.AutoModel if arch == "bert" else T.AutoModelForCausalLM).from_config(config)
    with torch.no_grad():  # non-trivial norm gains, so the unembedding's scale matters
        for name, p in model.named_parameters():
            if "norm" in name.lower() and p.dim() == 1:
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
