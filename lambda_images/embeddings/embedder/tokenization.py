"""Counting, limiting and truncating inputs with the model's own tokenizer.

Both backends share this step, so the limit check, ``truncate``,
``truncation_direction`` and the token counts reported to clients are the same
whichever backend embeds. It uses the Rust ``tokenizers`` library directly
(the fast tokenizer sentence-transformers itself runs), never transformers.

Prompts are prepended as text, as sentence-transformers does. Truncation never
removes the prompt: ``Right`` drops tokens from the end (sentence-transformers'
own behaviour), ``Left`` drops them from the start of the text, after the
prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tokenizers import Encoding, Tokenizer

Direction = Literal["Left", "Right"]


class InputTooLong(ValueError):
    """An input needs more tokens than the model takes and truncation is off."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(f"input {index} has {tokens} tokens; the limit is {limit}")
        self.index = index
        self.tokens = tokens
        self.limit = limit


class PromptTooLong(ValueError):
    """The prompt alone leaves no room for text."""


@dataclass(frozen=True)
class Fitted:
    """Inputs made to fit the model: what the backends embed."""

    texts: list[str]
    """The inputs without the prompt; cut at the start where Left truncation applied."""
    encodings: list[Encoding]
    """Tokenized prompt + text, special tokens included, within the limit."""
    truncated: int
    """How many inputs were truncated."""

    @property
    def token_counts(self) -> list[int]:
        return [len(encoding.ids) for encoding in self.encodings]


@dataclass(frozen=True)
class Token:
    """One token as TEI's /tokenize reports it."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.max_length = max_length
        self._prompt_lengths: dict[str, int] = {}

    @classmethod
    def from_file(cls, path: str, max_length: int) -> TextTokenizer:
        return cls(Tokenizer.from_file(path), max_length)

    def encode(self, texts: Sequence[str], prompt: str = "") -> list[Encoding]:
        """Full-length encodings of prompt + text (no truncation, no padding)."""
        return list(self._tokenizer.encode_batch([prompt + text for text in texts]))

    def fit(
        self,
        texts: Sequence[str],
        prompt: str = "",
        *,
        truncate: bool,
        direction: Direction = "Right",
    ) -> Fitted:
        """Encode ``texts`` within ``max_length`` tokens, or raise InputTooLong."""
        encodings = self.encode(texts, prompt)
        fitted_texts = list(texts)
        truncated = 0
        over = [i for i, encoding in enumerate(encodings) if len(encoding.ids) > self.max_length]
        if over and not truncate:
            first = over[0]
            raise InputTooLong(first, len(encodings[first].ids), self.max_length)
        for index in over:
            truncated += 1
            if direction == "Right":
                encodings[index] = self._encode_truncated_right(prompt + texts[index])
            else:
                fitted_texts[index], encodings[index] = self._cut_left(texts[index], prompt, encodings[index])
        return Fitted(texts=fitted_texts, encodings=encodings, truncated=truncated)

    def _encode_truncated_right(self, text: str) -> Encoding:
        self._tokenizer.enable_truncation(self.max_length, strategy="longest_first", direction="right")
        try:
            return self._tokenizer.encode(text)
        finally:
            self._tokenizer.no_truncation()

    def _cut_left(self, text: str, prompt: str, encoding: Encoding) -> tuple[str, Encoding]:
        """Drop tokens from the start of ``text`` (not the prompt) until prompt + text fits.

        Cuts the text at the character where the first kept token starts and
        tokenizes again, so both backends embed the same string; a cut inside
        a word can re-tokenize to a token more, hence the loop.
        """
        start = len(prompt)
        while len(encoding.ids) > self.max_length:
            overflow = len(encoding.ids) - self.max_length
            text_tokens = [
                offsets
                for offsets, special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
                if not special and offsets[1] > start
            ]
            if len(text_tokens) <= overflow:
                raise PromptTooLong(
                    f"the prompt {prompt!r} leaves no room for text within {self.max_length} tokens"
                )
            cut = max(text_tokens[overflow][0], start) - start
            text = text[max(cut, 1) :]
            encoding = self._tokenizer.encode(prompt + text)
        return text, encoding

    def prompt_length(self, prompt: str) -> int:
        """Tokens of the prompt at the start of an input, as sentence-transformers counts them.

        The prompt alone with special tokens, less a trailing special token
        (SEP/EOS); used to leave the prompt out of pooling when the model's
        Pooling has ``include_prompt=False``.
        """
        if prompt not in self._prompt_lengths:
            encoding = self._tokenizer.encode(prompt)
            length = len(encoding.ids)
            if encoding.special_tokens_mask and encoding.special_tokens_mask[-1]:
                length -= 1
            self._prompt_lengths[prompt] = length
        return self._prompt_lengths[prompt]

    def encode_for_tokens(self, text: str, prompt: str = "", *, add_special_tokens: bool = True) -> Encoding:
        """The encoding TEI's /tokenize reports (``tokens`` turns it into rows)."""
        return self._tokenizer.encode(prompt + text, add_special_tokens=add_special_tokens)

    @staticmethod
    def tokens(encoding: Encoding, full: str) -> list[Token]:
        """TEI's /tokenize rows: ids, covered text, character offsets into ``full`` (prompt + text)."""
        result = []
        for token_id, token, (start, stop), special in zip(
            encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask, strict=True
        ):
            if special:
                result.append(Token(id=token_id, text=token, special=True, start=None, stop=None))
            else:
                result.append(
                    Token(id=token_id, text=full[start:stop], special=False, start=start, stop=stop)
                )
        return result
