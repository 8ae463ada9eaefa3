"""The configuration: cdk.json context (and -c overrides) validated into a frozen AppConfig."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app import IMAGES_DIR, PROJECT_DIR, cdk_json_context, load_config
from stacks.config import KNOWN_KEYS, SETTING_KEYS, AppConfig, ConfigError, allowed, cli_context


def config_with(overrides: dict[str, Any], *, images_dir: Path = IMAGES_DIR) -> AppConfig:
    """What the app sees: cdk.json's context with -c style overrides, null keys dropped like the CLI."""
    context = {k: v for k, v in {**cdk_json_context(), **overrides}.items() if v is not None}
    return AppConfig.from_context(context, images_dir=images_dir, project_dir=PROJECT_DIR)


def test_cdk_json_lists_every_setting() -> None:
    # Given the context block of cdk.json
    context = cdk_json_context()
    # Then every key the app reads is listed there (null for the optional ones)
    assert context.keys() >= KNOWN_KEYS
    # And in the order the models define them, the order problems are reported in
    assert [key for key in context if key in KNOWN_KEYS] == list(SETTING_KEYS)


def test_defaults_from_cdk_json() -> None:
    # When the app reads cdk.json without overrides
    config = load_config()
    # Then the documented defaults come out, typed
    assert config.stack_name == "LlmInference"
    assert (config.llama.memory_mb, config.llama.architecture, config.llama.timeout_s) == (
        8192,
        "x86_64",
        300,
    )
    assert (config.embeddings.memory_mb, config.embeddings.timeout_s) == (8192, 60)
    assert config.llama.platform == "linux/amd64"
    assert config.llama.ephemeral_storage_mb == config.embeddings.ephemeral_storage_mb == 512
    assert config.llama.reserved_concurrency is None
    assert config.llama.provisioned_concurrency == 0
    assert config.llama.snap_start is config.embeddings.snap_start is False
    assert config.llama.url_invoke_mode == "RESPONSE_STREAM"
    assert config.embeddings.url_invoke_mode == "BUFFERED"  # not a setting
    assert "embeddings_url_invoke_mode" not in KNOWN_KEYS
    assert config.public_url_reserved_concurrency == 10
    assert config.llama.threads is None
    assert config.embeddings.threads is None
    assert config.llama_model.build_args() == {
        "MODEL_REPO": "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "MODEL_FILE": "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        "MODEL_REVISION": "91cad51170dc346986eccefdc2dd33a9da36ead9",
        "MODEL_SHA256": "",
        "MODEL_LOCAL_PATH": "",
    }
    assert config.embeddings_model.build_args() == {
        "MODEL_ID": "intfloat/multilingual-e5-small",
        "MODEL_REVISION": "614241f622f53c4eeff9890bdc4f31cfecc418b3",
        "MODEL_SHA256": "",
        "MODEL_LOCAL_PATH": "",
        "BACKEND": "onnx",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
    }
    assert config.function_url_auth == "AWS_IAM"
    assert config.cors_allowed_origins == ()
    assert (config.log_retention_days, config.log_level, config.hf_token_file) == (30, "INFO", None)
    assert config.lambda_log_level == "INFO"


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(ValidationError, match="frozen"):
        config.llama.memory_mb = 1  # type: ignore[misc]


def test_command_line_strings_are_parsed() -> None:
    # Given overrides as `-c key=value` delivers them: always strings
    config = config_with(
        {
            "llama_memory_mb": "10240",
            "embeddings_architecture": "arm64",
            "llama_threads": "4",
            "llama_reserved_concurrency": "3",
            "llama_provisioned_concurrency": "2",
            "embeddings_reserved_concurrency": "0",
            "cors_allowed_origins": "https://app.example.com, http://localhost:3000",
            "log_retention_days": "7",
            "log_level": "debug",
            "function_url_auth": "API_KEY",
            "public_url_reserved_concurrency": "20",
            "llama_snap_start": "False",
            "embeddings_snap_start": " TRUE ",
            "llama_url_invoke_mode": "buffered",
        }
    )
    # Then they come out typed
    assert config.llama.memory_mb == 10240
    assert config.embeddings.architecture == "arm64"
    assert config.embeddings.platform == "linux/arm64"
    assert config.llama.threads == 4
    assert (config.llama.reserved_concurrency, config.llama.provisioned_concurrency) == (3, 2)
    assert config.embeddings.reserved_concurrency == 0
    assert config.cors_allowed_origins == ("https://app.example.com", "http://localhost:3000")
    assert (config.log_retention_days, config.log_level, config.function_url_auth) == (7, "DEBUG", "API_KEY")
    assert config.public_url_reserved_concurrency == 20
    assert (config.llama.snap_start, config.embeddings.snap_start) == (False, True)
    assert config.llama.url_invoke_mode == "BUFFERED"


@pytest.mark.parametrize("unset", ["", "none", "null"])
def test_optional_values_can_be_unset_from_the_command_line(unset: str) -> None:
    config = config_with(
        {
            "llama_threads": unset,
            "llama_reserved_concurrency": unset,
            "public_url_reserved_concurrency": unset,
        }
    )
    assert config.llama.threads is None
    assert config.llama.reserved_concurrency is None
    assert config.public_url_reserved_concurrency is None


def test_cors_origins_as_a_json_list() -> None:
    config = config_with({"cors_allowed_origins": ["*"]})
    assert config.cors_allowed_origins == ("*",)


RETENTIONS = "1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827"


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("llama_memory_mb", 100, "must be an integer from 128 to 10240 (MB)"),
        ("llama_memory_mb", 20000, "must be an integer from 128 to 10240 (MB)"),
        ("embeddings_memory_mb", "lots", "must be an integer from 128 to 10240 (MB)"),
        ("llama_memory_mb", True, "must be an integer from 128 to 10240 (MB)"),
        ("llama_memory_mb", 1024.5, "must be an integer from 128 to 10240 (MB)"),
        ("llama_architecture", "x86", "must be one of x86_64 | arm64"),
        ("embeddings_architecture", "aarch64", "must be one of x86_64 | arm64"),
        ("llama_timeout_s", 901, "must be an integer from 1 to 900 (seconds)"),
        ("embeddings_timeout_s", 0, "must be an integer from 1 to 900 (seconds)"),
        ("llama_ephemeral_storage_mb", 256, "must be an integer from 512 to 10240 (MB)"),
        ("llama_reserved_concurrency", -1, "must be unset (null) or an integer, 0 or more"),
        ("llama_reserved_concurrency", False, "must be unset (null) or an integer, 0 or more"),
        ("public_url_reserved_concurrency", 0, "must be unset (null: no cap) or an integer, 1 or more"),
        ("public_url_reserved_concurrency", "ten", "must be unset (null: no cap) or an integer, 1 or more"),
        ("llama_snap_start", "yes", "must be true or false"),
        ("embeddings_snap_start", 1, "must be true or false"),
        ("llama_url_invoke_mode", "STREAM", "must be one of RESPONSE_STREAM | BUFFERED"),
        ("embeddings_provisioned_concurrency", -2, "must be an integer, 0 or more"),
        ("llama_threads", 0, "must be unset (null) or an integer from 1 to 6"),
        ("embeddings_threads", 7, "must be unset (null) or an integer from 1 to 6"),
        ("function_url_auth", "OPEN", "must be one of AWS_IAM | API_KEY"),
        ("function_url_auth", "NONE", "auth NONE is only offered as API_KEY"),
        ("log_retention_days", 8, f"must be one of CloudWatch Logs' retention periods: {RETENTIONS}"),
        ("log_retention_days", "forever", "retention periods"),
        ("log_level", "LOUD", "must be one of DEBUG | INFO | WARNING | ERROR | CRITICAL"),
        ("stack_name", "1stack", "must be a CloudFormation stack name"),
        ("stack_name", "my_stack", "must be a CloudFormation stack name"),
        ("llama_model_repo", "not a repo", "must be a Hugging Face repository id like ORG/NAME"),
        ("llama_model_repo", "just-a-name", "must be a Hugging Face repository id like ORG/NAME"),
        ("llama_model_file", "model.bin", "must be a .gguf file name inside the repository"),
        ("llama_model_file", "../x.gguf", "must be a .gguf file name inside the repository"),
        ("llama_model_revision", "main branch", "must be a branch, tag or commit hash"),
        ("llama_model_sha256", "abc", "must be unset (null), a sha256 hex digest, or FILE=DIGEST pairs"),
        ("embeddings_model_sha256", "model.safetensors=" + "g" * 64, "FILE=DIGEST pairs separated by commas"),
        ("embeddings_model_id", "e5", "must be a Hugging Face repository id like ORG/NAME"),
        ("embeddings_model_revision", "", "must be a branch, tag or commit hash"),
        ("embeddings_backend", "tensorflow", "must be one of onnx | torch"),
        ("embeddings_torch_index_url", "download.pytorch.org", "must be an http(s) URL of a pip index"),
        ("cors_allowed_origins", "https://app.example.com/", "each must be '*' or scheme://host[:port]"),
        ("cors_allowed_origins", "app.example.com", "each must be '*' or scheme://host[:port]"),
        ("cors_allowed_origins", 5, "must be a list of origins"),
        ("cors_allowed_origins", [f"https://h{n}.example" for n in range(101)], "at most 100"),
        ("llama_model_local_path", "/abs/model.gguf", "relative to lambda_images/ and inside llama/models/"),
        ("llama_model_local_path", "embeddings/models/x.gguf", "inside llama/models/"),
        ("llama_model_local_path", "llama/../common/x.gguf", "inside llama/models/"),
        ("llama_model_local_path", "llama/x.gguf", "inside llama/models/"),
        ("embeddings_model_local_path", "embeddings/my-model", "inside embeddings/models/"),
        ("llama_model_local_path", "llama/models/absent.gguf", "no such .gguf file"),
        ("embeddings_model_local_path", "embeddings/models/absent", "no such folder"),
        ("hf_token_file", "no/such/token", "must be unset (null) or the path of an existing file"),
    ],
)
def test_bad_value_fails_naming_key_value_and_what_is_allowed(key: str, value: Any, allowed: str) -> None:
    # When a setting has a bad value
    with pytest.raises(ConfigError) as caught:
        config_with({key: value})
    # Then the one problem names the key, shows the value and says what is allowed
    (problem,) = caught.value.problems
    assert problem.startswith(f"{key} = {value!r}: ")
    assert allowed in problem
    assert problem in str(caught.value)


def test_every_bad_value_is_reported_at_once_in_cdk_json_order() -> None:
    # Given bad values in several groups, one of them a combination of two valid values
    with pytest.raises(ConfigError) as caught:
        config_with(
            {
                "embeddings_timeout_s": 901,
                "llama_memory_mb": 100,
                "log_level": "LOUD",
                "embeddings_snap_start": "true",
                "embeddings_provisioned_concurrency": "1",
                "lama_threads": "2",
            }
        )
    # Then each is one line, in the order cdk.json lists the keys (unknown keys last)
    assert [p.split(" = ")[0] for p in caught.value.problems] == [
        "log_level",
        "llama_memory_mb",
        "embeddings_timeout_s",
        "embeddings_snap_start",
        "lama_threads",
    ]


def test_a_mistyped_key_is_reported() -> None:
    # Given a typo that would otherwise be silently ignored
    with pytest.raises(ConfigError) as caught:
        config_with({"lama_memory_mb": "4096"})
    (problem,) = caught.value.problems
    assert problem.startswith("lama_memory_mb = '4096': is not a setting of this app")
    assert "did you mean llama_memory_mb?" in problem


def test_cdk_internal_context_keys_are_not_mistaken_for_settings() -> None:
    config = config_with({"aws:cdk:enable-path-metadata": True, "@aws-cdk/core:newStyleStackSynthesis": True})
    assert config.stack_name == "LlmInference"


def test_a_missing_required_key_is_reported() -> None:
    context = {k: v for k, v in cdk_json_context().items() if v is not None and k != "llama_memory_mb"}
    with pytest.raises(ConfigError) as caught:
        AppConfig.from_context(context, images_dir=IMAGES_DIR, project_dir=PROJECT_DIR)
    assert caught.value.problems == ("llama_memory_mb is missing: add it to the context block of cdk.json",)


def test_provisioned_concurrency_cannot_exceed_reserved() -> None:
    with pytest.raises(ConfigError) as caught:
        config_with({"llama_reserved_concurrency": 1, "llama_provisioned_concurrency": 2})
    (problem,) = caught.value.problems
    assert problem == (
        "llama_provisioned_concurrency = 2: must not exceed llama_reserved_concurrency (1) when that is set"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"llama_snap_start": "true", "llama_provisioned_concurrency": "2"},
            "llama_snap_start = 'true': Lambda SnapStart does not support provisioned concurrency "
            "(llama_provisioned_concurrency is 2; set it to 0); or leave llama_snap_start false",
        ),
        (
            {"embeddings_snap_start": True, "embeddings_ephemeral_storage_mb": 1024},
            "embeddings_snap_start = True: Lambda SnapStart does not support ephemeral storage above "
            "512 MB (embeddings_ephemeral_storage_mb is 1024; set it to 512); or leave "
            "embeddings_snap_start false",
        ),
        (
            {
                "llama_snap_start": True,
                "llama_provisioned_concurrency": 1,
                "llama_ephemeral_storage_mb": 2048,
            },
            "llama_snap_start = True: Lambda SnapStart does not support provisioned concurrency "
            "(llama_provisioned_concurrency is 1; set it to 0) or ephemeral storage above 512 MB "
            "(llama_ephemeral_storage_mb is 2048; set it to 512); or leave llama_snap_start false",
        ),
    ],
)
def test_snap_start_refuses_what_snap_start_does_not_support(
    overrides: dict[str, Any], expected: str
) -> None:
    # When SnapStart is combined with provisioned concurrency or more than 512 MB of /tmp
    with pytest.raises(ConfigError) as caught:
        config_with(overrides)
    # Then one line says why and names every key involved
    assert caught.value.problems == (expected,)


def test_snap_start_alone_is_accepted() -> None:
    config = config_with({"llama_snap_start": "true", "embeddings_snap_start": "true"})
    assert (config.llama.snap_start, config.embeddings.snap_start) == (True, True)
    assert (config.llama.publishes_version, config.embeddings.publishes_version) == (True, True)
    assert not load_config().llama.publishes_version


@pytest.mark.parametrize(
    ("overrides", "llama", "embeddings"),
    [
        ({}, None, None),  # AWS_IAM: nothing reserved unless asked for
        ({"llama_reserved_concurrency": 4}, 4, None),
        ({"function_url_auth": "API_KEY"}, 10, 10),  # the default cap, from cdk.json
        ({"function_url_auth": "API_KEY", "llama_reserved_concurrency": 0}, 0, 10),  # own value wins
        ({"function_url_auth": "API_KEY", "embeddings_reserved_concurrency": 50}, 10, 50),
        ({"function_url_auth": "API_KEY", "public_url_reserved_concurrency": "3"}, 3, 3),
        ({"function_url_auth": "API_KEY", "public_url_reserved_concurrency": "null"}, None, None),
        ({"function_url_auth": "API_KEY", "public_url_reserved_concurrency": None}, None, None),  # dropped
    ],
)
def test_reserved_concurrency_caps_public_urls_in_api_key_mode(
    overrides: dict[str, Any], llama: int | None, embeddings: int | None
) -> None:
    config = config_with(overrides)
    assert (config.reserved_concurrency(config.llama), config.reserved_concurrency(config.embeddings)) == (
        llama,
        embeddings,
    )


def test_provisioned_concurrency_must_fit_the_public_url_cap() -> None:
    # Given API_KEY mode, whose cap becomes the reserved concurrency of a function without its own
    with pytest.raises(ConfigError) as caught:
        config_with({"function_url_auth": "API_KEY", "llama_provisioned_concurrency": "11"})
    # Then more provisioned environments than the cap fail, naming both keys
    (problem,) = caught.value.problems
    assert problem.startswith(
        "llama_provisioned_concurrency = '11': must not exceed public_url_reserved_concurrency (10)"
    )
    assert "llama_reserved_concurrency" in problem
    # And a function's own reserved concurrency, or no cap, lifts the limit
    api_key_11 = {"function_url_auth": "API_KEY", "llama_provisioned_concurrency": 11}
    for lift in ({"llama_reserved_concurrency": 11}, {"public_url_reserved_concurrency": "none"}):
        assert config_with({**api_key_11, **lift}).llama.provisioned_concurrency == 11
    # And in AWS_IAM mode the cap does not apply
    assert config_with({"llama_provisioned_concurrency": 11}).llama.provisioned_concurrency == 11


@pytest.mark.parametrize(
    ("level", "lambda_level"),
    [("DEBUG", "DEBUG"), ("info", "INFO"), ("WARNING", "WARN"), ("ERROR", "ERROR"), ("CRITICAL", "FATAL")],
)
def test_log_level_in_lambdas_names(level: str, lambda_level: str) -> None:
    assert config_with({"log_level": level}).lambda_log_level == lambda_level


def test_every_setting_says_what_it_allows() -> None:
    # Each key has its own sentence for error lines (tools and docs can ask for it too)
    assert all(allowed(key).startswith("must be") and allowed(key) != "must be valid" for key in KNOWN_KEYS)
    assert allowed("llama_memory_mb") == "must be an integer from 128 to 10240 (MB)"


def test_local_models_are_checked_against_the_build_context(tmp_path: Path) -> None:
    # Given a build context with a GGUF file and an embeddings model folder
    (tmp_path / "llama" / "models").mkdir(parents=True)
    (tmp_path / "llama" / "models" / "tiny.gguf").write_bytes(b"GGUF")
    (tmp_path / "llama" / "models" / "folder.gguf").mkdir()
    (tmp_path / "embeddings" / "models" / "mini").mkdir(parents=True)
    (tmp_path / "embeddings" / "models" / "weights.bin").write_bytes(b"x")
    # When they are chosen
    config = config_with(
        {
            "llama_model_local_path": "llama/models/tiny.gguf",
            "embeddings_model_local_path": "embeddings/models/mini",
        },
        images_dir=tmp_path,
    )
    # Then their paths become the MODEL_LOCAL_PATH build arguments
    assert config.llama_model.build_args()["MODEL_LOCAL_PATH"] == "llama/models/tiny.gguf"
    assert config.embeddings_model.build_args()["MODEL_LOCAL_PATH"] == "embeddings/models/mini"
    assert config.llama_model.source == "llama/models/tiny.gguf"
    # And a folder where a file is expected (and the reverse) is refused
    with pytest.raises(ConfigError, match=r"no such \.gguf file"):
        config_with({"llama_model_local_path": "llama/models/folder.gguf"}, images_dir=tmp_path)
    with pytest.raises(ConfigError, match="no such folder"):
        config_with({"embeddings_model_local_path": "embeddings/models/weights.bin"}, images_dir=tmp_path)


def test_hf_token_file_resolves_relative_to_the_project(tmp_path: Path) -> None:
    token = tmp_path / "hf-token"
    token.write_text("hf_dummy\n")
    assert config_with({"hf_token_file": str(token)}).hf_token_file == token.resolve()
    relative = config_with({"hf_token_file": "cdk.json"}).hf_token_file  # any existing project file
    assert relative == (PROJECT_DIR / "cdk.json").resolve()


def test_raw_cdk_json_with_nulls_is_accepted() -> None:
    # Tools that read cdk.json themselves (the local runner) pass its nulls through unchanged
    config = AppConfig.from_context(cdk_json_context(), images_dir=IMAGES_DIR, project_dir=PROJECT_DIR)
    assert config == load_config()


def test_config_module_needs_no_cdk() -> None:
    # The local runner and benchmarks import it without starting jsii/Node
    code = "import sys, stacks.config; sys.exit('aws_cdk' in sys.modules or 'jsii' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, check=False)
    assert result.returncode == 0


def test_cdk_json_has_the_feature_flags_aws_cdk_lib_recommends() -> None:
    # Given the flags the installed aws-cdk-lib recommends for new projects (what `cdk init` writes)
    import tarfile

    import aws_cdk

    (bundle,) = (Path(aws_cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(bundle) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        recommended = json.load(member)
    # Then cdk.json sets each of them to the recommended value
    context = cdk_json_context()
    assert {flag: context.get(flag) for flag in recommended} == recommended


def test_the_local_runner_reads_cdk_json_and_has_no_copy_of_its_defaults(tmp_path: Path) -> None:
    from local.functions import deployed_settings

    # Given cdk.json, the local runner's functions get its memory sizes and timeouts
    settings = deployed_settings()
    config = load_config()
    assert (settings["llama"].memory_mb, settings["llama"].timeout_s) == (
        config.llama.memory_mb,
        config.llama.timeout_s,
    )
    assert (settings["embeddings"].memory_mb, settings["embeddings"].backend) == (
        config.embeddings.memory_mb,
        config.embeddings_model.backend,
    )
    assert (settings["llama"].url_invoke_mode, settings["embeddings"].url_invoke_mode) == (
        "RESPONSE_STREAM",
        "BUFFERED",
    )
    assert (settings["llama"].snap_start, settings["embeddings"].snap_start) == (False, False)
    # And without cdk.json there is nothing to fall back on: the error says which file is missing
    with pytest.raises(FileNotFoundError, match=r"cdk\.json is missing"):
        deployed_settings(tmp_path / "cdk.json")


def test_a_missing_cdk_json_is_an_error_that_says_so(tmp_path: Path) -> None:
    # Given no cdk.json where the config is read from
    missing = tmp_path / "cdk.json"
    # Then every reader (the app, the doctor's context, the tools) says which file is missing and why
    with pytest.raises(FileNotFoundError, match=r"cdk\.json is missing: it holds .* every setting's default"):
        load_config(cdk_json=missing)
    with pytest.raises(FileNotFoundError, match=r"cdk\.json is missing"):
        cli_context({}, cdk_json=missing)


def test_cli_context_drops_nulls_and_applies_overrides() -> None:
    # Given cdk.json (with null defaults) and overrides, one of them null
    context = cli_context({"llama_memory_mb": "4096", "log_level": None})
    # Then the override wins, a null override unsets its key, and no key is null (as the CDK CLI passes it)
    assert context["llama_memory_mb"] == "4096"
    assert "log_level" not in context
    assert "alarm_email" not in context
    assert None not in context.values()
    assert load_config({"llama_memory_mb": "4096"}).llama.memory_mb == 4096
