"""Response bodies both functions answer in the same shape (OpenAI's model list)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """OpenAI's ``GET /v1/models``: the one model this function serves."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
