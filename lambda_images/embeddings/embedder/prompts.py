"""Named prompts (``prompt_name``) per model, with a default.

E5 models are trained with ``query: `` and ``passage: `` prefixes and embed
worse without them; their model card says to use ``query: `` for queries and
for anything that is not retrieval (similarity, clustering, classification)
and ``passage: `` for the documents searched. So for the intfloat E5 family
this service knows those two prompts and uses ``query`` when a request names
none. Order of precedence:

1. ``PROMPTS`` (a JSON object) and ``DEFAULT_PROMPT_NAME`` in the environment;
2. prompts the model folder declares (config_sentence_transformers.json);
3. the built-in table below, matched on the model id;
4. no prompts.

``DEFAULT_PROMPT_NAME=""`` turns the default off (for clients that add the
prefixes themselves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

E5_PROMPTS = {"query": "query: ", "passage": "passage: "}

BUILT_IN: tuple[tuple[re.Pattern[str], dict[str, str], str], ...] = (
    # intfloat/e5-{small,base,large}[-v2] and intfloat/multilingual-e5-{small,base,large};
    # not the -instruct and mistral variants, which take task instructions instead.
    (re.compile(r"^(.*/)?(multilingual-)?e5-(small|base|large)(-v2)?$", re.IGNORECASE), E5_PROMPTS, "query"),
)


class UnknownPrompt(ValueError):
    pass


@dataclass(frozen=True)
class PromptTable:
    prompts: dict[str, str]
    default_name: str | None
    source: str
    """Where the prompts came from: environment, model, built-in or none."""

    def __post_init__(self) -> None:
        if self.default_name is not None and self.default_name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise ValueError(f"default prompt {self.default_name!r} is not a known prompt (known: {known})")

    @classmethod
    def resolve(
        cls,
        model_id: str,
        *,
        declared: Mapping[str, str],
        declared_default: str | None,
        environment: Mapping[str, str] | None,
        environment_default: str | None,
    ) -> PromptTable:
        """Apply the precedence above; ``environment_default`` "" means no default."""
        if environment:
            prompts, default, source = dict(environment), None, "environment"
        elif declared:
            prompts, default, source = dict(declared), declared_default, "model"
        else:
            prompts, default, source = {}, None, "none"
            for pattern, table, table_default in BUILT_IN:
                if pattern.match(model_id):
                    prompts, default, source = dict(table), table_default, "built-in"
                    break
        if environment_default is not None:
            default = environment_default or None
        return cls(prompts=prompts, default_name=default, source=source)

    def text(self, name: str | None) -> str:
        """The prompt text for ``name``, the default prompt for None, or raise UnknownPrompt."""
        if name is None:
            return self.prompts[self.default_name] if self.default_name else ""
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts))
            hint = f"known prompt names: {known}" if known else "this model defines no prompts"
            raise UnknownPrompt(f"unknown prompt_name {name!r}; {hint}")
        return self.prompts[name]
