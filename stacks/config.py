"""The deployment's configuration: cdk.json context, read once and validated with pydantic.

Every setting is a snake_case key in the ``context`` block of ``cdk.json``,
where each one is listed with its default value: that file is the only place
defaults live (a key missing from it is an error, never a value from here).
``-c key=value`` on the CDK command line overrides a key for one run; such
values always arrive as strings, so every field accepts the JSON type and its
string spelling ("4096", "true", "none").

``AppConfig.from_context`` validates all keys in one pydantic pass and turns
every failure into one line of a ``ConfigError``: the key, the value given and
what is allowed (each field carries that sentence as ``Allowed`` metadata;
checks that need more words raise a ``setting`` error with their own). Unknown
snake_case keys are reported as well. Nothing else in the app reads context.

``load_config`` is the one reader of ``cdk.json`` for everything that needs the
deployed settings (the CDK app, the local runner, the benchmarks, the doctor):
it merges ``-c`` overrides the way the CDK CLI does and validates the result.

docs/configuration.md documents each key (a test keeps the two in step). This
module needs pydantic but not the CDK, so the local runner, the benchmarks and
the client read the deployed settings without starting jsii.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

Architecture = Literal["x86_64", "arm64"]
UrlAuth = Literal["AWS_IAM", "API_KEY"]
UrlInvokeMode = Literal["RESPONSE_STREAM", "BUFFERED"]
EmbeddingsBackend = Literal["onnx", "torch"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LambdaLogLevel = Literal["DEBUG", "INFO", "WARN", "ERROR", "FATAL"]

PROJECT_DIR = Path(__file__).resolve().parent.parent
CDK_JSON = PROJECT_DIR / "cdk.json"
IMAGES_DIR = PROJECT_DIR / "lambda_images"
"""The image build context: local model paths are checked against it."""

LAMBDA_LOG_LEVELS: Mapping[LogLevel, LambdaLogLevel] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARN",
    "ERROR": "ERROR",
    "CRITICAL": "FATAL",
}
"""``log_level`` (Python's names) in the names of Lambda's application log level."""

# Retention periods CloudWatch Logs accepts (PutRetentionPolicy), in days.
# "Never expire" is deliberately not offered: logs would cost storage forever.
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

MEMORY_MB = (128, 10240)
TIMEOUT_S = (1, 900)
EPHEMERAL_STORAGE_MB = (512, 10240)
SNAPSTART_MAX_EPHEMERAL_STORAGE_MB = 512  # SnapStart refuses more /tmp than this
MAX_VISIBLE_CPUS = 6  # Lambda shows a function at most 6 CPUs (at 8,846 MB and more).
MAX_CORS_ORIGINS = 100  # AWS::Lambda::Url Cors.AllowOrigins: at most 100 items
MAX_ORIGIN_LENGTH = 253  # ... each 1-253 characters.
MAX_MAP_CONCURRENCY = 10_000  # a Distributed Map runs at most 10,000 child workflows at once
MAX_ITEMS_PER_BATCH = 100_000  # embedder.batch's key format (six digits per position)
MIN_BATCH_BYTES = 1_024
MAX_BATCH_BYTES = 262_144  # ItemBatcher's MaxInputBytesPerBatch: 256 KiB at most

PLATFORMS: Mapping[Architecture, str] = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}
"""The Docker image platform each Lambda architecture runs."""

_OUR_KEY = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")  # CDK's own keys contain ':' '@' or '-'
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_UNSET = ("", "none", "null")
_BOOLEANS = {"true": True, "false": False}


class ConfigError(ValueError):
    """One or more context values are invalid; each line names key, value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid cdk.json context:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Allowed:
    """Field metadata: what a setting accepts, as the sentence an error line ends with."""

    text: str


def _one_of(choices: Any, note: str = "") -> Allowed:
    return Allowed(f"must be one of {' | '.join(str(choice) for choice in get_args(choices))}{note}")


def _problem(message: str, *, key: str | None = None) -> PydanticCustomError:
    """An error whose message replaces the field's ``Allowed`` text (``key``: report under that key)."""
    return PydanticCustomError("setting", "{message}", {"message": message, "key": key})


# --- parsers for -c strings (pydantic's own coercion does the rest) ------------------------------


def _stripped(raw: Any) -> Any:
    return raw.strip() if isinstance(raw, str) else raw


def _upper(raw: Any) -> Any:
    return raw.strip().upper() if isinstance(raw, str) else raw


def _not_bool(raw: Any) -> Any:
    """pydantic reads True as 1; a boolean is never a count or a size here."""
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a number")
    return raw


def _unset_or_number(raw: Any) -> Any:
    """'', 'none' and 'null' (how -c spells null) unset an optional number."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in _UNSET):
        return None
    return _not_bool(raw)


def _unset_or_text(raw: Any) -> Any:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in _UNSET):
        return None
    return _stripped(raw)


def _boolean(raw: Any) -> Any:
    """true/false as JSON or as -c strings (any case); everything else stays for strict bool to refuse."""
    if isinstance(raw, str):
        return _BOOLEANS.get(raw.strip().lower(), raw)
    return raw


def _origin_list(raw: Any) -> Any:
    """-c cors_allowed_origins=https://a.example,https://b.example arrives as one string."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    return raw


def _member_of(allowed: tuple[int, ...]) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value not in allowed:
            raise ValueError("not one of the allowed values")
        return value

    return check


def _good_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    if len(origins) > MAX_CORS_ORIGINS:
        raise _problem(f"lists {len(origins)} origins; a Function URL allows at most {MAX_CORS_ORIGINS}")
    bad = [
        origin
        for origin in origins
        if len(origin) > MAX_ORIGIN_LENGTH or not (origin == "*" or _ORIGIN.match(origin))
    ]
    if bad:
        raise _problem(
            f"has invalid origins {list(bad)!r}: each must be '*' or scheme://host[:port] "
            "(http or https, no path, no trailing slash)"
        )
    return origins


def _no_parent_dirs(path: str) -> str:
    if ".." in path.split("/"):
        raise ValueError("'..' leaves the repository")
    return path


# --- field types: the constraint and its sentence side by side -----------------------------------

MemoryMb = Annotated[
    int,
    Field(ge=MEMORY_MB[0], le=MEMORY_MB[1]),
    BeforeValidator(_not_bool),
    Allowed(f"must be an integer from {MEMORY_MB[0]} to {MEMORY_MB[1]} (MB)"),
]
TimeoutS = Annotated[
    int,
    Field(ge=TIMEOUT_S[0], le=TIMEOUT_S[1]),
    BeforeValidator(_not_bool),
    Allowed(f"must be an integer from {TIMEOUT_S[0]} to {TIMEOUT_S[1]} (seconds)"),
]
EphemeralStorageMb = Annotated[
    int,
    Field(ge=EPHEMERAL_STORAGE_MB[0], le=EPHEMERAL_STORAGE_MB[1]),
    BeforeValidator(_not_bool),
    Allowed(f"must be an integer from {EPHEMERAL_STORAGE_MB[0]} to {EPHEMERAL_STORAGE_MB[1]} (MB)"),
]
ReservedConcurrency = Annotated[
    int | None,
    Field(ge=0),
    BeforeValidator(_unset_or_number),
    Allowed("must be unset (null) or an integer, 0 or more"),
]
PublicUrlReservedConcurrency = Annotated[
    int | None,
    Field(ge=1),
    BeforeValidator(_unset_or_number),
    Allowed("must be unset (null: no cap) or an integer, 1 or more"),
]
ProvisionedConcurrency = Annotated[
    int, Field(ge=0), BeforeValidator(_not_bool), Allowed("must be an integer, 0 or more")
]
Threads = Annotated[
    int | None,
    Field(ge=1, le=MAX_VISIBLE_CPUS),
    BeforeValidator(_unset_or_number),
    Allowed(f"must be unset (null) or an integer from 1 to {MAX_VISIBLE_CPUS}"),
]
Switch = Annotated[bool, Strict(), BeforeValidator(_boolean), Allowed("must be true or false")]
ArchitectureSetting = Annotated[Architecture, BeforeValidator(_stripped), _one_of(Architecture)]
UrlInvokeModeSetting = Annotated[
    UrlInvokeMode, BeforeValidator(_upper), _one_of(UrlInvokeMode, " (the generator's Function URL)")
]
UrlAuthSetting = Annotated[
    UrlAuth,
    BeforeValidator(_stripped),
    _one_of(
        UrlAuth,
        " (auth NONE is only offered as API_KEY: a URL with auth NONE plus a Bearer key that the "
        "handlers check)",
    ),
]
BackendSetting = Annotated[EmbeddingsBackend, BeforeValidator(_stripped), _one_of(EmbeddingsBackend)]
LogLevelSetting = Annotated[LogLevel, BeforeValidator(_upper), _one_of(LogLevel)]
RetentionDays = Annotated[
    int,
    AfterValidator(_member_of(LOG_RETENTION_DAYS)),
    BeforeValidator(_not_bool),
    Allowed(
        "must be one of CloudWatch Logs' retention periods: "
        + ", ".join(str(days) for days in LOG_RETENTION_DAYS)
    ),
]
StackName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$"),
    Allowed("must be a CloudFormation stack name: a letter, then letters, digits or '-', at most 128"),
]
HubRepo = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"),
    Allowed("must be a Hugging Face repository id like ORG/NAME"),
]
Revision = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"),
    Allowed("must be a branch, tag or commit hash"),
]
GgufFile = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}\.gguf$"),
    AfterValidator(_no_parent_dirs),
    Allowed("must be a .gguf file name inside the repository"),
]


Sha256 = Annotated[
    Annotated[
        str,
        Field(pattern=r"^([A-Za-z0-9._/-]{1,200}=)?[0-9a-f]{64}(,([A-Za-z0-9._/-]{1,200}=)?[0-9a-f]{64})*$"),
    ]
    | None,
    BeforeValidator(_unset_or_text),  # '' / 'none' / null: no check
    Allowed("must be unset (null), a sha256 hex digest, or FILE=DIGEST pairs separated by commas"),
]
PipIndexUrl = Annotated[
    str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$"), Allowed("must be an http(s) URL of a pip index")
]
Origins = Annotated[
    tuple[str, ...],
    AfterValidator(_good_origins),
    BeforeValidator(_origin_list),
    Allowed("must be a list of origins (or, with -c, a comma-separated string)"),
]
LocalPath = Annotated[str | None, BeforeValidator(_unset_or_text), Allowed("must be unset (null) or a path")]
BucketName = Annotated[
    Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] | None,
    BeforeValidator(_unset_or_text),
    Allowed("must be unset (null: the stack creates a bucket) or an S3 bucket name (3-63 of a-z 0-9 . -)"),
]
S3Prefix = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]{0,199}/$"),
    AfterValidator(_no_parent_dirs),
    Allowed("must be an S3 key prefix ending in '/', e.g. input/ (letters, digits, !_.*'()-/, no leading /)"),
]


def _not_aws_namespace(value: str | None) -> str | None:
    if value is not None and value.startswith("AWS/"):
        raise ValueError("AWS/ namespaces are AWS's own")
    return value


MetricsNamespace = Annotated[
    Annotated[str, Field(pattern=r"^[A-Za-z0-9._/#:-]{1,255}$")] | None,
    AfterValidator(_not_aws_namespace),
    BeforeValidator(_unset_or_text),
    Allowed(
        "must be unset (null: the stack name) or a CloudWatch namespace: 1-255 letters, digits "
        "or . _ / # : -, not starting with AWS/"
    ),
]
EmailAddress = Annotated[
    Annotated[str, Field(pattern=r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$", max_length=254)] | None,
    BeforeValidator(_unset_or_text),
    Allowed("must be unset (null: no notifications) or one e-mail address"),
]
DailyTokens = Annotated[
    int | None,
    Field(ge=1),
    BeforeValidator(_unset_or_number),
    Allowed("must be unset (null: no budget alarm) or an integer, 1 or more (tokens per day)"),
]


def _prefixed(prefix: str) -> Callable[[str], str]:
    def alias(name: str) -> str:
        return prefix + name

    return alias


class _Settings(BaseModel):
    """Frozen, no unknown fields, strings stripped; each field validates from its cdk.json key."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @classmethod
    def key(cls, field: str) -> str:
        """The context key of ``field`` (its alias, e.g. ``llama_memory_mb`` for ``memory_mb``)."""
        return cls.model_fields[field].alias or field


class FunctionConfig(_Settings):
    """Lambda settings of one function (keys ``<prefix>_memory_mb`` etc.)."""

    memory_mb: MemoryMb
    architecture: ArchitectureSetting
    timeout_s: TimeoutS
    ephemeral_storage_mb: EphemeralStorageMb
    reserved_concurrency: ReservedConcurrency = None
    """None: draw from the account's unreserved pool (see ``AppConfig.reserved_concurrency``); 0: off."""
    provisioned_concurrency: ProvisionedConcurrency
    """0: none; more needs a published version and an alias, which the URL then serves."""
    snap_start: Switch
    """SnapStart on published versions: a version and an alias, which the URL then serves."""
    threads: Threads = None
    """N_THREADS for the handler; None lets it size threads from the memory's CPU share."""
    daily_token_budget: DailyTokens = None
    """Tokens a day (in and out) above which the budget alarm fires; None: no budget alarm."""

    @property
    def platform(self) -> str:
        return PLATFORMS[self.architecture]

    @property
    def publishes_version(self) -> bool:
        """A published version behind the ``live`` alias serves this function (its URL and ARN)."""
        return self.snap_start or self.provisioned_concurrency > 0

    @field_validator("provisioned_concurrency")
    @classmethod
    def _within_reserved(cls, value: int, info: ValidationInfo) -> int:
        reserved = info.data.get("reserved_concurrency")
        if reserved is not None and value > reserved:
            raise _problem(f"must not exceed {cls.key('reserved_concurrency')} ({reserved}) when that is set")
        return value

    @field_validator("snap_start")
    @classmethod
    def _snap_start_fits(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            return value
        conflicts = []
        provisioned = info.data.get("provisioned_concurrency")
        if provisioned:
            conflicts.append(
                f"provisioned concurrency ({cls.key('provisioned_concurrency')} is {provisioned}; "
                "set it to 0)"
            )
        storage = info.data.get("ephemeral_storage_mb")
        if storage is not None and storage > SNAPSTART_MAX_EPHEMERAL_STORAGE_MB:
            conflicts.append(
                f"ephemeral storage above {SNAPSTART_MAX_EPHEMERAL_STORAGE_MB} MB "
                f"({cls.key('ephemeral_storage_mb')} is {storage}; set it to "
                f"{SNAPSTART_MAX_EPHEMERAL_STORAGE_MB})"
            )
        if conflicts:
            raise _problem(
                f"Lambda SnapStart does not support {' or '.join(conflicts)}; "
                f"or leave {cls.key('snap_start')} false"
            )
        return value


class LlamaFunctionConfig(FunctionConfig):
    """The generator's Lambda settings (keys ``llama_*``)."""

    model_config = ConfigDict(alias_generator=_prefixed("llama_"))

    url_invoke_mode: UrlInvokeModeSetting
    """RESPONSE_STREAM: tokens reach HTTP clients as they are generated; BUFFERED: in one answer."""


class EmbeddingsFunctionConfig(FunctionConfig):
    """The embeddings function's Lambda settings (keys ``embeddings_*``)."""

    model_config = ConfigDict(alias_generator=_prefixed("embeddings_"))

    @property
    def url_invoke_mode(self) -> UrlInvokeMode:
        """Always BUFFERED, not a setting: each answer is one JSON document, nothing to stream."""
        return "BUFFERED"


def _local_model(value: str | None, info: ValidationInfo, *, folder: str, want_dir: bool) -> str | None:
    """A model under ``<folder>/models/`` of the build context, which must exist (None: download)."""
    if value is None:
        return None
    kind = "folder" if want_dir else ".gguf file"
    path = PurePosixPath(value)
    if (
        path.is_absolute()
        or ".." in path.parts
        or "\\" in value
        or len(path.parts) < 3
        or path.parts[:2] != (folder, "models")
    ):
        raise _problem(
            f"must be unset (null: download from the Hub) or the path of a model {kind} relative to "
            f"lambda_images/ and inside {folder}/models/ (the folder the Dockerfile copies models from), "
            f"e.g. {folder}/models/{'my-model' if want_dir else 'my-model.gguf'}"
        )
    images_dir: Path = _context(info)["images_dir"]
    target = images_dir / path
    if want_dir and not target.is_dir():
        raise _problem(f"no such folder in {images_dir}; copy the model there first")
    if not want_dir and not (target.is_file() and target.suffix == ".gguf"):
        raise _problem(f"no such .gguf file in {images_dir}; copy the model there first")
    return path.as_posix()


def _context(info: ValidationInfo) -> dict[str, Any]:
    if not isinstance(info.context, dict):
        raise TypeError("validate through AppConfig.from_context, which passes images_dir and project_dir")
    return info.context


class LlamaModel(_Settings):
    """The GGUF file baked into the generator image (Docker build arguments)."""

    model_config = ConfigDict(alias_generator=_prefixed("llama_model_"))

    repo: HubRepo
    file: GgufFile
    revision: Revision
    sha256: Sha256 = None
    """The GGUF file's expected sha256: the image build fails when the download differs."""
    local_path: LocalPath = None
    """Path relative to lambda_images/ (e.g. ``llama/models/my.gguf``); None downloads from the Hub."""

    @field_validator("local_path")
    @classmethod
    def _local_path_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _local_model(value, info, folder="llama", want_dir=False)

    @property
    def source(self) -> str:
        """Where the model comes from, for descriptions: the local path or repo/file."""
        return self.local_path or f"{self.repo}/{self.file}"

    def build_args(self) -> dict[str, str]:
        return {
            "MODEL_REPO": self.repo,
            "MODEL_FILE": self.file,
            "MODEL_REVISION": self.revision,
            "MODEL_SHA256": self.sha256 or "",
            "MODEL_LOCAL_PATH": self.local_path or "",
        }


class EmbeddingsModel(_Settings):
    """The sentence-transformers model baked into the embeddings image (Docker build arguments)."""

    model_config = ConfigDict(alias_generator=_prefixed("embeddings_"))

    model_id: HubRepo
    revision: Annotated[Revision, Field(alias="embeddings_model_revision")]
    sha256: Annotated[Sha256, Field(alias="embeddings_model_sha256")] = None
    """Expected sha256 of the downloaded files (FILE=DIGEST pairs): the build fails when one differs."""
    local_path: Annotated[LocalPath, Field(alias="embeddings_model_local_path")] = None
    """Folder relative to lambda_images/ (e.g. ``embeddings/models/my-model``); None downloads."""
    backend: BackendSetting
    torch_index_url: PipIndexUrl

    @field_validator("local_path")
    @classmethod
    def _local_path_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _local_model(value, info, folder="embeddings", want_dir=True)

    @property
    def source(self) -> str:
        """Where the model comes from, for descriptions: the local path or the model id."""
        return self.local_path or self.model_id

    def build_args(self) -> dict[str, str]:
        return {
            "MODEL_ID": self.model_id,
            "MODEL_REVISION": self.revision,
            "MODEL_SHA256": self.sha256 or "",
            "MODEL_LOCAL_PATH": self.local_path or "",
            "BACKEND": self.backend,
            "TORCH_INDEX_URL": self.torch_index_url,
        }


class BatchEmbeddingsConfig(_Settings):
    """The optional bulk embedding part (keys ``batch_embeddings*``): bucket, batch function, state machine.

    docs/batch.md explains each limit: a batch is at most 256 KiB of items (Step Functions' payload
    limit), a Distributed Map runs at most 10,000 child workflows at once.
    """

    model_config = ConfigDict(alias_generator=_prefixed("batch_embeddings_"))

    enabled: Annotated[Switch, Field(alias="batch_embeddings")]
    bucket_name: BucketName = None
    """None: the stack creates the bucket; else the name of an existing bucket to read and write."""
    input_prefix: S3Prefix
    output_prefix: S3Prefix
    memory_mb: MemoryMb
    timeout_s: TimeoutS
    max_concurrency: Annotated[
        int,
        Field(ge=1, le=MAX_MAP_CONCURRENCY),
        BeforeValidator(_not_bool),
        Allowed(f"must be an integer from 1 to {MAX_MAP_CONCURRENCY} (batch functions running at once)"),
    ]
    items_per_batch: Annotated[
        int,
        Field(ge=1, le=MAX_ITEMS_PER_BATCH),
        BeforeValidator(_not_bool),
        Allowed(f"must be an integer from 1 to {MAX_ITEMS_PER_BATCH}"),
    ]
    bytes_per_batch: Annotated[
        int,
        Field(ge=MIN_BATCH_BYTES, le=MAX_BATCH_BYTES),
        BeforeValidator(_not_bool),
        Allowed(
            f"must be an integer from {MIN_BATCH_BYTES} to {MAX_BATCH_BYTES} (bytes; Step Functions "
            "passes at most 256 KiB to a child workflow)"
        ),
    ]
    tolerated_failure_percentage: Annotated[
        float,
        Field(ge=0, le=100),
        BeforeValidator(_not_bool),
        Allowed("must be a number from 0 to 100 (percent of items)"),
    ]

    @field_validator("output_prefix")
    @classmethod
    def _prefixes_apart(cls, value: str, info: ValidationInfo) -> str:
        other = info.data.get("input_prefix")
        if other is not None and (value.startswith(other) or other.startswith(value)):
            raise _problem(
                f"must not overlap {cls.key('input_prefix')} ({other!r}): the state machine may only read "
                "the input prefix and the batch function may only write the output prefix"
            )
        return value


class AppConfig(_Settings):
    """Everything the stack needs to know, validated. Build it with ``from_context``."""

    stack_name: StackName
    function_url_auth: UrlAuthSetting
    """AWS_IAM: SigV4-signed URLs. API_KEY: URLs with auth NONE guarded by a Bearer key in Secrets Manager."""
    public_url_reserved_concurrency: PublicUrlReservedConcurrency = None
    """API_KEY mode: the reserved concurrency of each function without its own; None: no cap."""
    cors_allowed_origins: Origins = ()
    log_retention_days: RetentionDays
    log_level: LogLevelSetting
    hf_token_file: Annotated[
        Path | None,
        BeforeValidator(_unset_or_text),
        Allowed("must be unset (null) or the path of an existing file"),
    ] = None
    """A file holding a Hugging Face token, passed to the image builds as the BuildKit secret ``hf_token``."""
    llama: LlamaFunctionConfig
    llama_model: LlamaModel
    embeddings: EmbeddingsFunctionConfig
    embeddings_model: EmbeddingsModel
    metrics_enabled: Switch
    """Per-request EMF metrics from both handlers (POWERTOOLS_METRICS_DISABLED when false)."""
    metrics_namespace: MetricsNamespace = None
    """The CloudWatch namespace of those metrics; None: the stack name."""
    dashboard_enabled: Switch
    alarms_enabled: Switch
    alarm_email: EmailAddress = None
    """Where alarm notifications go (an SNS topic with this e-mail subscription); None: no topic."""
    tracing_enabled: Switch
    """Active X-Ray tracing of both functions, with spans from the handlers."""
    batch: BatchEmbeddingsConfig
    """The optional bulk embedding part (off by default): docs/batch.md."""

    SECTIONS: ClassVar[Mapping[str, type[_Settings]]] = {
        "llama": LlamaFunctionConfig,
        "llama_model": LlamaModel,
        "embeddings": EmbeddingsFunctionConfig,
        "embeddings_model": EmbeddingsModel,
        "batch": BatchEmbeddingsConfig,
    }
    """Fields holding a group of settings; their own fields carry the context keys as aliases."""

    @property
    def namespace(self) -> str:
        """The CloudWatch namespace of the handlers' metrics: ``metrics_namespace``, else the stack name."""
        return self.metrics_namespace or self.stack_name

    @property
    def lambda_log_level(self) -> LambdaLogLevel:
        """``log_level`` as Lambda's application log level names it (WARNING -> WARN, CRITICAL -> FATAL)."""
        return LAMBDA_LOG_LEVELS[self.log_level]

    def reserved_concurrency(self, function: FunctionConfig) -> int | None:
        """The reserved concurrency ``function`` is deployed with.

        Its own ``<fn>_reserved_concurrency`` when set; otherwise, in API_KEY mode (URLs
        anyone can call), ``public_url_reserved_concurrency``; otherwise None.
        """
        if function.reserved_concurrency is not None:
            return function.reserved_concurrency
        if self.function_url_auth == "API_KEY":
            return self.public_url_reserved_concurrency
        return None

    @field_validator("hf_token_file")
    @classmethod
    def _token_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = value.expanduser()
        path = path if path.is_absolute() else _context(info)["project_dir"] / path
        if not path.is_file():
            raise _problem(f"must be unset (null) or the path of an existing file; {path} is not one")
        return path.resolve()

    @field_validator("llama", "embeddings")
    @classmethod
    def _provisioned_fits_the_public_cap(cls, value: FunctionConfig, info: ValidationInfo) -> FunctionConfig:
        """In API_KEY mode the cap becomes the reserved concurrency, which provisioned must fit in."""
        cap = info.data.get("public_url_reserved_concurrency")
        if (
            info.data.get("function_url_auth") == "API_KEY"
            and value.reserved_concurrency is None
            and cap is not None
            and value.provisioned_concurrency > cap
        ):
            raise _problem(
                f"must not exceed public_url_reserved_concurrency ({cap}), the reserved concurrency "
                f"API_KEY mode gives a function without its own {value.key('reserved_concurrency')}: "
                f"raise either, or set public_url_reserved_concurrency to null",
                key=value.key("provisioned_concurrency"),
            )
        return value

    @classmethod
    def from_context(cls, context: Mapping[str, Any], *, images_dir: Path, project_dir: Path) -> AppConfig:
        """Validate the context (cdk.json plus ``-c`` overrides) into a config, or raise ConfigError.

        ``images_dir`` is the build context root (lambda_images/), against which local model
        paths are checked; ``project_dir`` anchors a relative ``hf_token_file``. Keys whose
        value is null are unset, whether the CDK CLI dropped them or a tool passes them on.
        """
        ours = {key: value for key, value in context.items() if _OUR_KEY.match(key)}
        data: dict[str, Any] = {section: {} for section in cls.SECTIONS}
        for key, value in ours.items():
            section = _SECTION_OF_KEY.get(key)
            if section is None:
                data[key] = value  # a shared setting, or an unknown key that extra="forbid" reports
            else:
                data[section][key] = value
        try:
            return cls.model_validate(data, context={"images_dir": images_dir, "project_dir": project_dir})
        except ValidationError as error:
            raise ConfigError(_problem_lines(error, ours)) from None


def _setting_fields() -> dict[str, tuple[str | None, FieldInfo]]:
    """Context key -> (section field or None for a shared setting, its field), in definition order."""
    fields: dict[str, tuple[str | None, FieldInfo]] = {}
    for name, info in AppConfig.model_fields.items():
        section = AppConfig.SECTIONS.get(name)
        if section is None:
            fields[name] = (None, info)
        else:
            fields.update(
                {sub.alias or sub_name: (name, sub) for sub_name, sub in section.model_fields.items()}
            )
    return fields


_SETTINGS = _setting_fields()
_SECTION_OF_KEY = {key: section for key, (section, _) in _SETTINGS.items() if section is not None}

SETTING_KEYS: tuple[str, ...] = tuple(_SETTINGS)
"""Every context key this app reads, in the order of the models (and of cdk.json)."""

KNOWN_KEYS: frozenset[str] = frozenset(SETTING_KEYS)
"""Every context key this app reads; any other snake_case key is reported as unknown."""


def allowed(key: str) -> str:
    """What setting ``key`` accepts, as its error lines say it (for docs and tools)."""
    return next(
        (meta.text for meta in _SETTINGS[key][1].metadata if isinstance(meta, Allowed)),
        "must be valid",
    )


def _problem_lines(error: ValidationError, context: Mapping[str, Any]) -> list[str]:
    """One line per bad key: ``key = value: what is allowed`` (or why it is missing or unknown)."""
    lines: dict[str, str] = {}
    for detail in error.errors(include_url=False):
        key = _key_of(detail)
        if key in lines:
            continue  # the first reason is enough: one line per key
        lines[key] = _line(key, detail, context)
    return list(lines.values())


def _key_of(detail: ErrorDetails) -> str:
    explicit = (detail.get("ctx") or {}).get("key")
    if explicit:
        return str(explicit)
    location = detail["loc"]
    if str(location[0]) in AppConfig.SECTIONS and len(location) > 1:
        return str(location[1])
    return str(location[0])


def _line(key: str, detail: ErrorDetails, context: Mapping[str, Any]) -> str:
    if detail["type"] == "missing":
        return f"{key} is missing: add it to the context block of cdk.json"
    value = context.get(key, detail["input"])
    if detail["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, SETTING_KEYS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return (
            f"{key} = {value!r}: is not a setting of this app ({hint}every setting is listed in "
            "cdk.json's context block and in docs/configuration.md)"
        )
    reason = detail["msg"] if detail["type"] == "setting" else allowed(key)
    return f"{key} = {value!r}: {reason}"


# --- reading cdk.json ----------------------------------------------------------------------------


def cdk_json_context(cdk_json: Path = CDK_JSON) -> dict[str, Any]:
    """The context block of ``cdk_json``: the feature flags and every setting's default.

    cdk.json is the only place the defaults live, so a missing file is an error that says so.
    """
    if not cdk_json.is_file():
        raise FileNotFoundError(
            f"{cdk_json} is missing: it holds the app's feature flags and every setting's default; "
            "restore it from git (git checkout -- cdk.json)"
        )
    context: dict[str, Any] = json.loads(cdk_json.read_text())["context"]
    return context


def cli_context(overrides: Mapping[str, Any] | None = None, *, cdk_json: Path = CDK_JSON) -> dict[str, Any]:
    """cdk.json's context with ``-c`` overrides, as the CDK CLI passes it: keys set to null dropped."""
    merged = {**cdk_json_context(cdk_json), **(overrides or {})}
    return {key: value for key, value in merged.items() if value is not None}


def load_config(overrides: Mapping[str, Any] | None = None, *, cdk_json: Path = CDK_JSON) -> AppConfig:
    """The configuration `cdk synth` would use with these ``-c`` overrides (for tools and tests).

    A missing ``cdk_json`` is a FileNotFoundError that says so, a bad value a ConfigError.
    """
    return AppConfig.from_context(
        cli_context(overrides, cdk_json=cdk_json), images_dir=IMAGES_DIR, project_dir=PROJECT_DIR
    )
