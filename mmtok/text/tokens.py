"""Caption token counts: exact with a tokenizer file, else a labelled estimate.

- `tokenizer.json` (any Hugging Face fast tokenizer) through the `tokenizers` library;
- a tiktoken BPE file (`*.tiktoken`, `tokenizer.model` of Llama 3) through `tiktoken`, split with
  Llama 3's pre-tokenizer pattern (the same as cl100k's);
- no file: ceil(UTF-8 bytes / 4). About right for English with 100k+ vocabularies (about 4
  characters per token) and for CJK (3 bytes per character, about 1 token per 1-1.5
  characters); it is reported as an estimate everywhere it is used.

Special tokens (BOS/EOS, chat markers) are not counted: they belong to the sample template.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mmtok.errors import MmtokError

ESTIMATE_LABEL = "estimate: ceil(UTF-8 bytes / 4)"
# meta-llama/llama3 tokenizer.py `pat_str`
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TextCounter:
    """Counts caption tokens; picklable (the tokenizer loads in `setup`, once per worker)."""

    def __init__(self, path: str | None = None):
        self.path = path
        self._encode = None
        self.vocab_size: int | None = None

    @property
    def exact(self) -> bool:
        return self.path is not None

    @property
    def label(self) -> str:
        return f"tokenizer: {os.path.basename(self.path)}" if self.path else ESTIMATE_LABEL

    def __getstate__(self):
        return {"path": self.path, "vocab_size": self.vocab_size, "_encode": None}

    def setup(self) -> TextCounter:
        """Load the tokenizer; raises MmtokError for a missing or unreadable file."""
        if self.path is None or self._encode is not None:
            return self
        if not os.path.isfile(self.path):
            raise MmtokError(f"tokenizer file not found: {self.path}")
        if self.path.endswith(".json"):
            self._encode, self.vocab_size = _load_hf(self.path)
        else:
            self._encode, self.vocab_size = _load_tiktoken(self.path)
        return self

    def count(self, texts: Sequence[str | None]) -> list[int]:
        if self.path is None:
            return [-(-len(t.encode("utf-8")) // 4) if t else 0 for t in texts]
        self.setup()
        present = [t or "" for t in texts]
        return [
            len(ids) if text else 0 for ids, text in zip(self._encode(present), texts, strict=True)
        ]

    @property
    def bytes_per_id(self) -> int:
        """int32 ids, or uint16 when the vocabulary fits."""
        return 2 if self.vocab_size is not None and self.vocab_size <= 65_536 else 4


def _load_hf(path: str):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MmtokError(
            "a tokenizer.json needs the `tokenizers` package", hint="pip install 'mmtok[text]'"
        ) from None
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # the library raises plain Exceptions for bad files
        raise MmtokError(f"cannot load tokenizer {path}: {e}") from None

    def encode(texts):
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    return encode, tok.get_vocab_size()


def _load_tiktoken(path: str):
    try:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
    except ImportError:
        raise MmtokError(
            "a tiktoken BPE file needs the `tiktoken` package", hint="pip install 'mmtok[text]'"
        ) from None
    try:
        ranks = load_tiktoken_bpe(path)
    except Exception as e:
        raise MmtokError(
            f"cannot load {path} as a tiktoken BPE file ({e})",
            hint="give a tokenizer.json or a tiktoken file (base64 token, rank per line)",
        ) from None
    enc = tiktoken.Encoding(
        name=os.path.basename(path),
        pat_str=LLAMA3_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={},
    )
    return enc.encode_ordinary_batch, len(ranks)
