"""The deployment's configuration: cdk.json context, read once and validated.

Every setting is a snake_case key in the ``context`` block of ``cdk.json``,
where each one is listed with its default value. ``-c key=value`` on the CDK
command line overrides a key for one run; such values always arrive as
strings, so every parser here accepts the JSON type and its string spelling.

``AppConfig.from_context`` reads all keys at once and reports every bad value
together in one ``ConfigError`` whose lines name the key, the value given and
what is allowed. Nothing else in the app reads context.

docs/configuration.md documents each key (a test keeps the two in step).
This module uses the standard library only, so the local runner and the
benchmarks can read the deployed settings without starting the CDK.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar, cast

Architecture = Literal["x86_64", "arm64"]
UrlAuth = Literal["AWS_IAM", "API_KEY"]
EmbeddingsBackend = Literal["onnx", "torch"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

ARCHITECTURES: tuple[Architecture, ...] = ("x86_64", "arm64")
URL_AUTH_MODES: tuple[UrlAuth, ...] = ("AWS_IAM", "API_KEY")
EMBEDDINGS_BACKENDS: tuple[EmbeddingsBackend, ...] = ("onnx", "torch")
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Retention periods CloudWatch Logs accepts (PutRetentionPolicy), in days.
# "Never expire" is deliberately not offered: logs would cost storage forever.
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

MEMORY_MB = (128, 10240)
TIMEOUT_S = (1, 900)
EPHEMERAL_STORAGE_MB = (512, 10240)
MAX_VISIBLE_CPUS = 6  # Lambda shows a function at most 6 CPUs (at 8,846 MB and more).
MAX_CORS_ORIGINS = 100  # AWS::Lambda::Url Cors.AllowOrigins: at most 100 items
MAX_ORIGIN_LENGTH = 253  # ... each 1-253 characters.

PLATFORMS: Mapping[Architecture, str] = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}
"""The Docker image platform each Lambda architecture runs."""

FUNCTION_KEYS = (
    "memory_mb",
    "architecture",
    "timeout_s",
    "ephemeral_storage_mb",
    "reserved_concurrency",
    "provisioned_concurrency",
    "threads",
)
LLAMA_MODEL_KEYS = ("model_repo", "model_file", "model_revision", "model_local_path")
EMBEDDINGS_MODEL_KEYS = ("model_id", "model_revision", "model_local_path", "backend", "torch_index_url")
SHARED_KEYS = (
    "stack_name",
    "function_url_auth",
    "cors_allowed_origins",
    "log_retention_days",
    "log_level",
    "hf_token_file",
)

KNOWN_KEYS: frozenset[str] = frozenset(
    (
        *(f"llama_{key}" for key in (*FUNCTION_KEYS, *LLAMA_MODEL_KEYS)),
        *(f"embeddings_{key}" for key in (*FUNCTION_KEYS, *EMBEDDINGS_MODEL_KEYS)),
        *SHARED_KEYS,
    )
)
"""Every context key this app reads; any other snake_case key is reported as unknown."""

_OUR_KEY = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")  # CDK's own keys contain ':' '@' or '-'
_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_GGUF_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}\.gguf$")
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_UNSET = ("", "none", "null")

T = TypeVar("T")


class ConfigError(ValueError):
    """One or more context values are invalid; each line names key, value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid cdk.json context:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class FunctionConfig:
    """Lambda settings of one function (keys ``<prefix>_memory_mb`` etc.)."""

    memory_mb: int
    architecture: Architecture
    timeout_s: int
    ephemeral_storage_mb: int
    reserved_concurrency: int | None
    """None: draw from the account's unreserved pool; 0 turns the function off."""
    provisioned_concurrency: int
    """0: none; more needs a published version and an alias, which the URL then serves."""
    threads: int | None
    """N_THREADS for the handler; None lets it size threads from the memory's CPU share."""

    @property
    def platform(self) -> str:
        return PLATFORMS[self.architecture]


@dataclass(frozen=True)
class LlamaModel:
    """The GGUF file baked into the generator image (Docker build arguments)."""

    repo: str
    file: str
    revision: str
    local_path: str | None
    """Path relative to lambda_images/ (e.g. ``llama/models/my.gguf``); None downloads from the Hub."""

    @property
    def source(self) -> str:
        """Where the model comes from, for descriptions: the local path or repo/file."""
        return self.local_path or f"{self.repo}/{self.file}"

    def build_args(self) -> dict[str, str]:
        return {
            "MODEL_REPO": self.repo,
            "MODEL_FILE": self.file,
            "MODEL_REVISION": self.revision,
            "MODEL_LOCAL_PATH": self.local_path or "",
        }


@dataclass(frozen=True)
class EmbeddingsModel:
    """The sentence-transformers model baked into the embeddings image (Docker build arguments)."""

    model_id: str
    revision: str
    local_path: str | None
    """Folder relative to lambda_images/ (e.g. ``embeddings/models/my-model``); None downloads."""
    backend: EmbeddingsBackend
    torch_index_url: str

    @property
    def source(self) -> str:
        """Where the model comes from, for descriptions: the local path or the model id."""
        return self.local_path or self.model_id

    def build_args(self) -> dict[str, str]:
        return {
            "MODEL_ID": self.model_id,
            "MODEL_REVISION": self.revision,
            "MODEL_LOCAL_PATH": self.local_path or "",
            "BACKEND": self.backend,
            "TORCH_INDEX_URL": self.torch_index_url,
        }


@dataclass(frozen=True)
class AppConfig:
    """Everything the stack needs to know, validated."""

    stack_name: str
    llama: FunctionConfig
    llama_model: LlamaModel
    embeddings: FunctionConfig
    embeddings_model: EmbeddingsModel
    function_url_auth: UrlAuth
    """AWS_IAM: SigV4-signed URLs. API_KEY: URLs with auth NONE guarded by a Bearer key in Secrets Manager."""
    cors_allowed_origins: tuple[str, ...]
    log_retention_days: int
    log_level: LogLevel
    hf_token_file: Path | None
    """A file holding a Hugging Face token, passed to the image builds as the BuildKit secret ``hf_token``."""

    @classmethod
    def from_context(cls, context: Mapping[str, Any], *, images_dir: Path, project_dir: Path) -> AppConfig:
        """Validate the context (cdk.json plus ``-c`` overrides) into a config, or raise ConfigError.

        ``images_dir`` is the build context root (lambda_images/), against which local model
        paths are checked; ``project_dir`` anchors a relative ``hf_token_file``.
        """
        reader = _Reader(context)
        unknown = sorted(key for key in context if _OUR_KEY.match(key) and key not in KNOWN_KEYS)
        for key in unknown:
            reader.problem(
                key, context[key], f"is not a setting of this app (known: {', '.join(sorted(KNOWN_KEYS))})"
            )

        llama = _function_config(reader, "llama")
        embeddings = _function_config(reader, "embeddings")
        llama_model = LlamaModel(
            repo=reader.match("llama_model_repo", _HUB_REPO, "a Hugging Face repository id like ORG/NAME"),
            file=reader.match(
                "llama_model_file", _GGUF_FILE, "a .gguf file name inside the repository", no_dotdot=True
            ),
            revision=reader.match("llama_model_revision", _REVISION, "a branch, tag or commit hash"),
            local_path=reader.local_path("llama_model_local_path", images_dir, "llama", want_dir=False),
        )
        embeddings_model = EmbeddingsModel(
            model_id=reader.match(
                "embeddings_model_id", _HUB_REPO, "a Hugging Face repository id like ORG/NAME"
            ),
            revision=reader.match("embeddings_model_revision", _REVISION, "a branch, tag or commit hash"),
            local_path=reader.local_path(
                "embeddings_model_local_path", images_dir, "embeddings", want_dir=True
            ),
            backend=reader.choice("embeddings_backend", EMBEDDINGS_BACKENDS),
            torch_index_url=reader.match("embeddings_torch_index_url", _URL, "an http(s) URL of a pip index"),
        )
        config = cls(
            stack_name=reader.match(
                "stack_name",
                _STACK_NAME,
                "a CloudFormation stack name: a letter, then letters, digits or '-', at most 128",
            ),
            llama=llama,
            llama_model=llama_model,
            embeddings=embeddings,
            embeddings_model=embeddings_model,
            function_url_auth=reader.choice(
                "function_url_auth",
                URL_AUTH_MODES,
                note=(
                    " (auth NONE is only offered as API_KEY: a URL with auth NONE plus a Bearer key "
                    "that the handlers check)"
                ),
            ),
            cors_allowed_origins=reader.origins("cors_allowed_origins"),
            log_retention_days=reader.one_of_ints("log_retention_days", LOG_RETENTION_DAYS),
            log_level=reader.choice("log_level", LOG_LEVELS, upper=True),
            hf_token_file=reader.existing_file("hf_token_file", project_dir),
        )
        if reader.problems:
            raise ConfigError(reader.problems)
        return config


def _function_config(reader: _Reader, prefix: str) -> FunctionConfig:
    reserved = reader.optional_int(f"{prefix}_reserved_concurrency", minimum=0)
    provisioned = reader.int_in(f"{prefix}_provisioned_concurrency", 0, None)
    if reserved is not None and provisioned > reserved:
        reader.problem(
            f"{prefix}_provisioned_concurrency",
            provisioned,
            f"must not exceed {prefix}_reserved_concurrency ({reserved}) when that is set",
        )
    return FunctionConfig(
        memory_mb=reader.int_in(f"{prefix}_memory_mb", *MEMORY_MB, unit="MB"),
        architecture=reader.choice(f"{prefix}_architecture", ARCHITECTURES),
        timeout_s=reader.int_in(f"{prefix}_timeout_s", *TIMEOUT_S, unit="seconds"),
        ephemeral_storage_mb=reader.int_in(
            f"{prefix}_ephemeral_storage_mb", *EPHEMERAL_STORAGE_MB, unit="MB"
        ),
        reserved_concurrency=reserved,
        provisioned_concurrency=provisioned,
        threads=reader.optional_int(f"{prefix}_threads", minimum=1, maximum=MAX_VISIBLE_CPUS),
    )


class _Reader:
    """Reads keys from the context, collecting a message for every bad value.

    Each method returns a value of the right type even when the input is bad
    (a placeholder), so all keys are checked in one pass; ``from_context``
    raises if any problem was recorded.
    """

    def __init__(self, context: Mapping[str, Any]) -> None:
        self._context = context
        self.problems: list[str] = []

    def problem(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{key} = {value!r}: {allowed}")

    def _get(self, key: str, *, optional: bool = False) -> tuple[bool, Any]:
        """(present, raw value); a missing required key is a problem, a missing optional one is unset.

        CDK drops context keys whose value is null, so an optional key listed as
        null in cdk.json arrives as missing.
        """
        if key not in self._context:
            if not optional:
                self.problems.append(f"{key} is missing: add it to the context block of cdk.json")
            return False, None
        return True, self._context[key]

    def _parse(self, key: str, parse: Callable[[Any], T | None], allowed: str, placeholder: T) -> T:
        present, raw = self._get(key)
        if not present:
            return placeholder
        value = parse(raw)
        if value is None:
            self.problem(key, raw, allowed)
            return placeholder
        return value

    def int_in(self, key: str, minimum: int, maximum: int | None, unit: str = "") -> int:
        suffix = f" ({unit})" if unit else ""
        allowed = (
            f"must be an integer from {minimum} to {maximum}{suffix}"
            if maximum is not None
            else f"must be an integer, {minimum} or more{suffix}"
        )

        def parse(raw: Any) -> int | None:
            value = _as_int(raw)
            if value is None or value < minimum or (maximum is not None and value > maximum):
                return None
            return value

        return self._parse(key, parse, allowed, minimum)

    def optional_int(self, key: str, *, minimum: int, maximum: int | None = None) -> int | None:
        present, raw = self._get(key, optional=True)
        if not present or _is_unset(raw):
            return None
        value = _as_int(raw)
        if value is None or value < minimum or (maximum is not None and value > maximum):
            upper = f" to {maximum}" if maximum is not None else " or more"
            self.problem(key, raw, f"must be unset (null) or an integer from {minimum}{upper}")
            return None
        return value

    def one_of_ints(self, key: str, allowed: tuple[int, ...]) -> int:
        def parse(raw: Any) -> int | None:
            value = _as_int(raw)
            return value if value in allowed else None

        listed = ", ".join(str(value) for value in allowed)
        return self._parse(
            key, parse, f"must be one of CloudWatch Logs' retention periods: {listed}", allowed[0]
        )

    def choice(self, key: str, allowed: tuple[T, ...], *, upper: bool = False, note: str = "") -> T:
        def parse(raw: Any) -> T | None:
            if not isinstance(raw, str):
                return None
            text = raw.strip().upper() if upper else raw.strip()
            return next((option for option in allowed if option == text), None)

        listed = " | ".join(str(option) for option in allowed)
        return self._parse(key, parse, f"must be one of {listed}{note}", allowed[0])

    def match(self, key: str, pattern: re.Pattern[str], allowed: str, *, no_dotdot: bool = False) -> str:
        def parse(raw: Any) -> str | None:
            if not isinstance(raw, str) or not pattern.match(raw.strip()):
                return None
            if no_dotdot and ".." in raw.split("/"):
                return None
            return raw.strip()

        return self._parse(key, parse, f"must be {allowed}", "")

    def origins(self, key: str) -> tuple[str, ...]:
        present, raw = self._get(key, optional=True)
        if not present or raw is None:
            return ()
        if isinstance(raw, str):  # -c cors_allowed_origins=https://a.example,https://b.example
            items: list[Any] = [item.strip() for item in raw.split(",") if item.strip()]
        elif isinstance(raw, list):
            items = raw
        else:
            self.problem(key, raw, "must be a list of origins (or, with -c, a comma-separated string)")
            return ()
        if len(items) > MAX_CORS_ORIGINS:
            self.problem(
                key, raw, f"lists {len(items)} origins; a Function URL allows at most {MAX_CORS_ORIGINS}"
            )
            return ()
        bad = [
            item
            for item in items
            if not isinstance(item, str)
            or len(item) > MAX_ORIGIN_LENGTH
            or not (item == "*" or _ORIGIN.match(item))
        ]
        if bad:
            self.problem(
                key,
                raw,
                f"has invalid origins {bad!r}: each must be '*' or scheme://host[:port] "
                "(http or https, no path, no trailing slash)",
            )
            return ()
        return tuple(cast(list[str], items))

    def local_path(self, key: str, images_dir: Path, folder: str, *, want_dir: bool) -> str | None:
        present, raw = self._get(key, optional=True)
        if not present or _is_unset(raw):
            return None
        kind = "folder" if want_dir else ".gguf file"
        allowed = (
            f"must be unset (null: download from the Hub) or the path of a model {kind} relative to "
            f"lambda_images/ and inside {folder}/models/ (the folder the Dockerfile copies models from), "
            f"e.g. {folder}/models/{'my-model' if want_dir else 'my-model.gguf'}"
        )
        if not isinstance(raw, str):
            self.problem(key, raw, allowed)
            return None
        path = PurePosixPath(raw.strip())
        if (
            path.is_absolute()
            or ".." in path.parts
            or "\\" in raw
            or len(path.parts) < 3
            or path.parts[:2] != (folder, "models")
        ):
            self.problem(key, raw, allowed)
            return None
        target = images_dir / path
        if want_dir and not target.is_dir():
            self.problem(key, raw, f"no such folder in {images_dir}; copy the model there first")
            return None
        if not want_dir and not (target.is_file() and target.suffix == ".gguf"):
            self.problem(key, raw, f"no such .gguf file in {images_dir}; copy the model there first")
            return None
        return path.as_posix()

    def existing_file(self, key: str, base: Path) -> Path | None:
        present, raw = self._get(key, optional=True)
        if not present or _is_unset(raw):
            return None
        if not isinstance(raw, str):
            self.problem(key, raw, "must be unset (null) or the path of a file")
            return None
        path = Path(raw.strip()).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            self.problem(key, raw, f"must be unset (null) or the path of an existing file; {path} is not one")
            return None
        return path.resolve()


def _is_unset(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and raw.strip().lower() in _UNSET)


def _as_int(raw: Any) -> int | None:
    """An int from JSON (int, or a float without fraction) or from a -c string; None otherwise."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", raw):
        return int(raw)
    return None
