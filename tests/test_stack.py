"""The synthesized template: both image functions, their roles, logs, URLs and outputs.

Templates are built in-process with aws_cdk.assertions, from cdk.json's
context (feature flags and defaults) plus overrides, once per configuration.
Resources are found by their properties, never by generated logical IDs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from app import IMAGES_DIR, build_app, cdk_json_context
from stacks.config import LOG_RETENTION_DAYS, ConfigError
from stacks.inference_function import _RETENTION

Synth = Callable[..., tuple[Template, dict[str, Any]]]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Synthesize with overrides; returns the template and the stack's asset manifest."""

    def run(
        overrides: dict[str, Any] | None = None, images_dir: Path = IMAGES_DIR
    ) -> tuple[Template, dict[str, Any]]:
        outdir = tmp_path_factory.mktemp("cdk.out")
        app, stack = build_app(
            {**cdk_json_context(), **(overrides or {})}, outdir=str(outdir), images_dir=images_dir
        )
        app.synth()
        assets = json.loads((outdir / f"{stack.stack_name}.assets.json").read_text())
        return Template.from_stack(stack), assets

    return run


@pytest.fixture(scope="module")
def default(synth: Synth) -> tuple[Template, dict[str, Any]]:
    return synth()


@pytest.fixture(scope="module")
def template(default: tuple[Template, dict[str, Any]]) -> Template:
    return default[0]


VARIANT = {
    "function_url_auth": "API_KEY",
    "embeddings_architecture": "arm64",
    "llama_memory_mb": "10240",
    "llama_provisioned_concurrency": "2",
    "llama_reserved_concurrency": "3",
    "embeddings_reserved_concurrency": "0",
    "llama_threads": "4",
    "cors_allowed_origins": "https://app.example.com,http://localhost:3000",
    "log_retention_days": "7",
    "log_level": "DEBUG",
}


@pytest.fixture(scope="module")
def variant(synth: Synth) -> tuple[Template, dict[str, Any]]:
    """API-key URLs, arm64 embeddings, provisioned and reserved concurrency, CORS, threads (as -c strings)."""
    return synth(VARIANT)


@pytest.fixture(scope="module")
def variant_template(variant: tuple[Template, dict[str, Any]]) -> Template:
    return variant[0]


# --- helpers that find resources by what they are, not by logical ID ---------------------------


def functions(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    """service name ('llama' / 'embeddings') -> (logical id, properties) of each function."""
    found = template.find_resources("AWS::Lambda::Function")
    by_service = {
        props["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]: (
            logical_id,
            props["Properties"],
        )
        for logical_id, props in found.items()
    }
    assert set(by_service) == {"llama", "embeddings"}
    return by_service


def ref_id(value: Any) -> str:
    """The logical id a {"Ref": id} or {"Fn::GetAtt": [id, attr]} points at."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


def url_of(template: Template, function_id: str) -> dict[str, Any]:
    urls: list[dict[str, Any]] = [
        props["Properties"]
        for props in template.find_resources("AWS::Lambda::Url").values()
        if ref_id(props["Properties"]["TargetFunctionArn"]) == function_id
    ]
    assert len(urls) == 1
    return urls[0]


def policy_of_role(template: Template, role_id: str) -> list[dict[str, Any]]:
    policies: list[list[dict[str, Any]]] = [
        props["Properties"]["PolicyDocument"]["Statement"]
        for props in template.find_resources("AWS::IAM::Policy").values()
        if [ref_id(role) for role in props["Properties"]["Roles"]] == [role_id]
    ]
    assert len(policies) == 1, "each role has exactly one inline policy"
    return policies[0]


def docker_asset(assets: dict[str, Any], folder: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (asset_hash, image["source"])
        for asset_hash, image in assets["dockerImages"].items()
        if image["displayName"] == f"{folder} image"
    ]
    return found


# --- default configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "memory", "timeout"),
    [("llama", 8192, 300), ("embeddings", 2048, 60)],
)
def test_both_functions_are_container_images_with_the_configured_size(
    template: Template, service: str, memory: int, timeout: int
) -> None:
    # Given the default configuration, then each function is an image function sized as documented
    _, props = functions(template)[service]
    assert props["PackageType"] == "Image"
    assert "Runtime" not in props
    assert "Handler" not in props
    assert props["MemorySize"] == memory
    assert props["Timeout"] == timeout
    assert props["Architectures"] == ["x86_64"]
    assert props["EphemeralStorage"] == {"Size": 512}
    assert "ReservedConcurrentExecutions" not in props
    # And its image is the CDK asset pushed to the bootstrap repository
    assert "container-assets" in json.dumps(props["Code"]["ImageUri"])


def test_exactly_the_expected_resources(template: Template) -> None:
    template.resource_count_is("AWS::Lambda::Function", 2)
    template.resource_count_is("AWS::Lambda::Url", 2)
    template.resource_count_is("AWS::IAM::Role", 2)
    template.resource_count_is("AWS::IAM::Policy", 2)
    template.resource_count_is("AWS::Logs::LogGroup", 2)
    template.resource_count_is("AWS::Lambda::Alias", 0)
    template.resource_count_is("AWS::Lambda::Version", 0)
    template.resource_count_is("AWS::SecretsManager::Secret", 0)
    template.resource_count_is("AWS::Lambda::Permission", 0)


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_url_is_iam_authenticated_and_buffered(template: Template, service: str) -> None:
    function_id, _ = functions(template)[service]
    url = url_of(template, function_id)
    assert url["AuthType"] == "AWS_IAM"
    assert url["InvokeMode"] == "BUFFERED"
    assert "Qualifier" not in url
    assert "Cors" not in url  # no origins configured: browsers on other origins get no CORS grant


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_logs_go_to_an_own_log_group_as_json_with_retention(template: Template, service: str) -> None:
    _, props = functions(template)[service]
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    group_id = ref_id(props["LoggingConfig"]["LogGroup"])
    group = template.to_json()["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == 30
    assert group["DeletionPolicy"] == "Delete"  # `cdk destroy` leaves no log storage behind


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_role_may_only_write_its_own_log_group(template: Template, service: str) -> None:
    # Given the function's role and log group
    _, props = functions(template)[service]
    role_id = ref_id(props["Role"])
    role = template.to_json()["Resources"][role_id]["Properties"]
    # Then only Lambda can assume it, no managed policy (no AWSLambdaBasicExecutionRole) is attached
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}
    ]
    assert "ManagedPolicyArns" not in role
    assert "Policies" not in role
    # And its one statement writes log streams of its own log group (ARN ends in ':*') and nothing else
    (statement,) = policy_of_role(template, role_id)
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == {"Fn::GetAtt": [ref_id(props["LoggingConfig"]["LogGroup"]), "Arn"]}


def test_no_policy_grants_on_a_wildcard_resource(template: Template, variant_template: Template) -> None:
    for current in (template, variant_template):
        for policy in current.find_resources("AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                resources = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                assert all(isinstance(resource, dict) for resource in resources), statement
                assert "*" not in json.dumps(statement["Action"])


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_environment_holds_only_the_contracted_variables(template: Template, service: str) -> None:
    _, props = functions(template)[service]
    assert props["Environment"]["Variables"] == {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


def test_outputs_name_arn_and_url_of_each_function(template: Template) -> None:
    fns = functions(template)
    outputs = template.to_json()["Outputs"]
    for name, service in (("Llama", "llama"), ("Embeddings", "embeddings")):
        function_id, _ = fns[service]
        assert outputs[f"{name}FunctionName"]["Value"] == {"Ref": function_id}
        assert outputs[f"{name}FunctionArn"]["Value"] == {"Fn::GetAtt": [function_id, "Arn"]}
        url_id = ref_id(outputs[f"{name}FunctionUrl"]["Value"])
        assert outputs[f"{name}FunctionUrl"]["Value"] == {"Fn::GetAtt": [url_id, "FunctionUrl"]}
    assert not any(key.startswith("ApiKey") for key in outputs)


def test_stack_is_environment_agnostic(template: Template) -> None:
    # No account or region is baked in: the template resolves them at deploy time
    text = json.dumps(template.to_json())
    assert "${AWS::AccountId}" in text
    assert "${AWS::Region}" in text
    assert "CDK_DEFAULT" not in text


@pytest.mark.parametrize(
    ("folder", "dockerfile", "build_args"),
    [
        (
            "llama",
            "llama/Dockerfile",
            {
                "MODEL_REPO": "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
                "MODEL_FILE": "qwen2.5-1.5b-instruct-q4_k_m.gguf",
                "MODEL_REVISION": "main",
                "MODEL_LOCAL_PATH": "",
            },
        ),
        (
            "embeddings",
            "embeddings/Dockerfile",
            {
                "MODEL_ID": "intfloat/multilingual-e5-small",
                "MODEL_REVISION": "main",
                "MODEL_LOCAL_PATH": "",
                "BACKEND": "onnx",
                "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
            },
        ),
    ],
)
def test_image_assets_carry_dockerfile_build_args_and_platform(
    default: tuple[Template, dict[str, Any]], folder: str, dockerfile: str, build_args: dict[str, str]
) -> None:
    _, source = docker_asset(default[1], folder)
    assert source["dockerFile"] == dockerfile
    assert source["dockerBuildArgs"] == build_args
    assert source["platform"] == "linux/amd64"
    assert "dockerBuildSecrets" not in source


# --- overrides change the template --------------------------------------------------------------


def test_memory_and_architecture_overrides(variant: tuple[Template, dict[str, Any]]) -> None:
    template, assets = variant
    fns = functions(template)
    assert fns["llama"][1]["MemorySize"] == 10240
    assert fns["llama"][1]["Architectures"] == ["x86_64"]
    # arm64 changes both the function and the image platform it is built for
    assert fns["embeddings"][1]["Architectures"] == ["arm64"]
    assert docker_asset(assets, "embeddings")[1]["platform"] == "linux/arm64"
    assert docker_asset(assets, "llama")[1]["platform"] == "linux/amd64"


def test_api_key_mode_generates_a_secret_and_opens_the_urls_to_the_key_check(
    variant_template: Template,
) -> None:
    template = variant_template
    # Then one generated secret exists
    secrets = template.find_resources(
        "AWS::SecretsManager::Secret",
        {"Properties": {"GenerateSecretString": {"PasswordLength": 48, "ExcludePunctuation": True}}},
    )
    assert len(secrets) == 1
    (secret_id,) = secrets
    assert "SecretString" not in secrets[secret_id]["Properties"]
    fns = functions(template)
    for service in ("llama", "embeddings"):
        function_id, props = fns[service]
        # And each URL has auth NONE, with the public permissions Function URLs need
        url = url_of(template, function_id)
        assert url["AuthType"] == "NONE"
        # And the function learns where the key is, never the key itself
        variables = props["Environment"]["Variables"]
        assert variables["API_KEY_SECRET_ARN"] == {"Ref": secret_id}
        assert "API_KEY" not in variables
        # And may read that one secret, with GetSecretValue only
        statements = policy_of_role(template, ref_id(props["Role"]))
        reads = [s for s in statements if "secretsmanager" in json.dumps(s["Action"])]
        assert reads == [
            {
                "Action": "secretsmanager:GetSecretValue",
                "Effect": "Allow",
                "Resource": {"Ref": secret_id},
                "Sid": "ReadApiKey",
            }
        ]
    template.resource_count_is("AWS::Lambda::Permission", 4)
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE"},
    )
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Action": "lambda:InvokeFunction", "Principal": "*", "InvokedViaFunctionUrl": True},
    )
    # And the key value is never resolved into the template (no dynamic reference)
    assert "resolve:secretsmanager" not in json.dumps(template.to_json())


def test_api_key_mode_outputs_where_to_read_the_key(variant_template: Template) -> None:
    outputs = variant_template.to_json()["Outputs"]
    (secret_id,) = variant_template.find_resources("AWS::SecretsManager::Secret")
    assert outputs["ApiKeySecretArn"]["Value"] == {"Ref": secret_id}
    assert outputs["ApiKeyCommand"]["Value"] == {
        "Fn::Join": [
            "",
            [
                "aws secretsmanager get-secret-value --secret-id ",
                {"Ref": secret_id},
                " --region ",
                {"Ref": "AWS::Region"},
                " --query SecretString --output text",
            ],
        ]
    }


def test_provisioned_concurrency_publishes_a_version_behind_an_alias_that_serves_the_url(
    variant_template: Template,
) -> None:
    template = variant_template
    fns = functions(template)
    llama_id, _ = fns["llama"]
    # Then the llama function has a version and a 'live' alias with 2 provisioned environments
    versions = template.find_resources(
        "AWS::Lambda::Version", {"Properties": {"FunctionName": {"Ref": llama_id}}}
    )
    assert len(versions) == 1
    (version_id,) = versions
    aliases = template.find_resources(
        "AWS::Lambda::Alias",
        {
            "Properties": {
                "FunctionName": {"Ref": llama_id},
                "Name": "live",
                "FunctionVersion": {"Fn::GetAtt": [version_id, "Version"]},
                "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 2},
            }
        },
    )
    assert len(aliases) == 1
    (alias_id,) = aliases
    # And the URL points at the alias, and the ARN output is the alias (what callers should invoke)
    url = url_of(template, llama_id)
    assert url["Qualifier"] == "live"
    assert template.to_json()["Outputs"]["LlamaFunctionArn"]["Value"] == {"Ref": alias_id}
    # And the embeddings function, without provisioned concurrency, has neither
    template.resource_count_is("AWS::Lambda::Alias", 1)
    assert "Qualifier" not in url_of(template, fns["embeddings"][0])


def test_reserved_concurrency_threads_cors_retention_and_log_level(variant_template: Template) -> None:
    template = variant_template
    fns = functions(template)
    llama, embeddings = fns["llama"][1], fns["embeddings"][1]
    assert llama["ReservedConcurrentExecutions"] == 3
    assert embeddings["ReservedConcurrentExecutions"] == 0  # 0 = switched off, a kill switch
    assert llama["Environment"]["Variables"]["N_THREADS"] == "4"
    assert "N_THREADS" not in embeddings["Environment"]["Variables"]
    assert llama["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == "DEBUG"
    for function_id, _ in fns.values():
        cors = url_of(template, function_id)["Cors"]
        assert cors["AllowOrigins"] == ["https://app.example.com", "http://localhost:3000"]
        assert cors["AllowMethods"] == ["GET", "POST"]
        assert {"authorization", "content-type", "x-amz-date", "x-amz-security-token"} <= set(
            cors["AllowHeaders"]
        )
        assert cors["MaxAge"] == 300
    template.all_resources_properties("AWS::Logs::LogGroup", {"RetentionInDays": 7})


def test_every_offered_retention_maps_to_a_cdk_retention() -> None:
    assert tuple(_RETENTION) == LOG_RETENTION_DAYS


def test_bad_configuration_fails_before_anything_is_built() -> None:
    with pytest.raises(ConfigError, match=r"llama_memory_mb = 100: must be an integer from 128 to 10240"):
        build_app({**cdk_json_context(), "llama_memory_mb": 100})
