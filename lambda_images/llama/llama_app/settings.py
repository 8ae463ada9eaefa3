"""The generator's configuration, read once from the environment at init.

The image bakes every default (model path and identity from the Dockerfile's
build arguments); the stack sets only N_THREADS, API_KEY_SECRET_ARN and the
powertools variables; local runs and tests set MODEL_PATH and MODEL_ALIAS.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambda_common.limits import LAMBDA_PAYLOAD_LIMIT


class LlamaSettings(BaseSettings):
    """Environment variables of the llama.cpp generator (names are the field names, upper case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    model_path: Path = Field(
        default=Path("/opt/model/model.gguf"),
        description="GGUF file to load; the image bakes the model here.",
    )
    model_alias: str = Field(
        default="",
        max_length=200,
        description=(
            "Name clients use for the model (the `model` field of OpenAI requests, /v1/models). "
            "Empty: the file stem of MODEL_LOCAL_PATH, else of MODEL_FILE, else of MODEL_PATH."
        ),
    )
    model_repo: str = Field(
        default="", description="Hub repository the image's model came from (baked by the Dockerfile)."
    )
    model_file: str = Field(default="", description="File taken from MODEL_REPO (baked by the Dockerfile).")
    model_revision: str = Field(default="", description="Revision of MODEL_REPO (baked by the Dockerfile).")
    model_local_path: str = Field(
        default="", description="Build-context path of a local model (baked by the Dockerfile)."
    )

    n_ctx: int = Field(
        default=4096, ge=256, le=131072, description="Context window in tokens (prompt + generated)."
    )
    n_batch: int = Field(
        default=512, ge=8, le=8192, description="Prompt tokens evaluated per llama_decode call."
    )
    n_threads: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Threads for generation; unset: one per vCPU of Lambda's CPU share at this memory size.",
    )
    n_threads_batch: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Threads for prompt processing; unset: the same as for generation.",
    )
    use_mmap: bool = Field(default=True, description="Map the model file instead of reading it into memory.")

    default_max_tokens: int = Field(
        default=256,
        ge=1,
        le=131072,
        description="Tokens to generate when a request names no max_tokens / n-generate.",
    )
    max_tokens_limit: int = Field(
        default=4096,
        ge=1,
        le=131072,
        description="Largest max_tokens / n-generate a request may ask for (else 400).",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=LAMBDA_PAYLOAD_LIMIT,
        description="Largest request body accepted on the Function URL (else 413); Lambda's own cap is 6 MB.",
    )
    deadline_margin_ms: int = Field(
        default=1000,
        ge=0,
        le=60_000,
        description="Stop generating this long before the invocation's deadline; answer with what is done.",
    )

    @field_validator("model_path")
    @classmethod
    def _model_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no model file at {value}")
        return value

    @model_validator(mode="after")
    def _limits_fit(self) -> LlamaSettings:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"DEFAULT_MAX_TOKENS ({self.default_max_tokens}) "
                f"exceeds MAX_TOKENS_LIMIT ({self.max_tokens_limit})"
            )
        return self

    @property
    def alias(self) -> str:
        """The one model name this function answers to."""
        if self.model_alias.strip():
            return self.model_alias.strip()
        for source in (self.model_local_path, self.model_file):
            if source.strip():
                return _stem(source.strip())
        return _stem(str(self.model_path))

    @property
    def owner(self) -> str:
        """Where the model came from, for /v1/models' `owned_by`."""
        if self.model_local_path.strip():
            return "local"
        return self.model_repo.split("/", 1)[0] if self.model_repo else "local"


def _stem(path: str) -> str:
    name = PurePosixPath(path).name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
