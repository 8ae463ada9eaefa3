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
from aws_cdk.assertions import Match, Template

from app import IMAGES_DIR, build_app, cdk_json_context
from stacks.config import LOG_RETENTION_DAYS, ConfigError
from stacks.inference_function import _RETENTION
from stacks.regions import FUNCTION_URL_UNSUPPORTED_REGIONS, SNAPSTART_UNSUPPORTED_REGIONS

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
    [("llama", 8192, 300), ("embeddings", 8192, 60)],
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


@pytest.mark.parametrize(("service", "mode"), [("llama", "RESPONSE_STREAM"), ("embeddings", "BUFFERED")])
def test_url_is_iam_authenticated_and_streams_only_the_generator(
    template: Template, service: str, mode: str
) -> None:
    function_id, props = functions(template)[service]
    url = url_of(template, function_id)
    assert url["AuthType"] == "AWS_IAM"
    assert url["InvokeMode"] == mode
    assert "Qualifier" not in url
    assert "Cors" not in url  # no origins configured: browsers on other origins get no CORS grant
    # And the function's runtime is told how its URL frames answers
    assert props["Environment"]["Variables"]["FUNCTION_URL_INVOKE_MODE"] == mode


def test_generator_url_streams_by_default(template: Template) -> None:
    template.resource_properties_count_is("AWS::Lambda::Url", {"InvokeMode": "RESPONSE_STREAM"}, 1)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {
                "Variables": Match.object_like(
                    {"POWERTOOLS_SERVICE_NAME": "llama", "FUNCTION_URL_INVOKE_MODE": "RESPONSE_STREAM"}
                )
            }
        },
    )


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_logs_go_to_an_own_log_group_as_json_with_retention(template: Template, service: str) -> None:
    _, props = functions(template)[service]
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    # Lambda filters JSON logs at the application log level: log_level's, not Lambda's INFO default
    assert props["LoggingConfig"]["ApplicationLogLevel"] == "INFO"
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
        "FUNCTION_URL_INVOKE_MODE": {"llama": "RESPONSE_STREAM", "embeddings": "BUFFERED"}[service],
        "POWERTOOLS_METRICS_NAMESPACE": "LlmInference",
    }
    assert "SnapStart" not in props  # off by default: its cache is billed while a version is active


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
                "MODEL_REVISION": "91cad51170dc346986eccefdc2dd33a9da36ead9",
                "MODEL_SHA256": "",
                "MODEL_LOCAL_PATH": "",
            },
        ),
        (
            "embeddings",
            "embeddings/Dockerfile",
            {
                "MODEL_ID": "intfloat/multilingual-e5-small",
                "MODEL_REVISION": "614241f622f53c4eeff9890bdc4f31cfecc418b3",
                "MODEL_SHA256": "",
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
    assert llama["LoggingConfig"]["ApplicationLogLevel"] == embeddings["LoggingConfig"]["ApplicationLogLevel"]
    assert llama["LoggingConfig"]["ApplicationLogLevel"] == "DEBUG"
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


# --- SnapStart, the API-key concurrency cap, log levels and region rules ----------------------

SNAPSTART = {
    "llama_snap_start": "true",
    "embeddings_snap_start": "true",
    "llama_url_invoke_mode": "BUFFERED",
    "log_level": "WARNING",
    "function_url_auth": "API_KEY",
    "public_url_reserved_concurrency": "null",
}


@pytest.fixture(scope="module")
def snapstart_template(synth: Synth) -> Template:
    """SnapStart on both, a buffered generator URL, WARNING logs, API-key URLs with no concurrency cap."""
    return synth(SNAPSTART)[0]


@pytest.fixture(scope="module")
def api_key_template(synth: Synth) -> Template:
    """API-key URLs with the default cap, and an explicit reserved concurrency for the embeddings."""
    return synth({"function_url_auth": "API_KEY", "embeddings_reserved_concurrency": "2"})[0]


@pytest.mark.parametrize(("name", "service"), [("Llama", "llama"), ("Embeddings", "embeddings")])
def test_snap_start_publishes_a_version_whose_alias_serves_the_url_and_the_arn_output(
    snapstart_template: Template, name: str, service: str
) -> None:
    template = snapstart_template
    function_id, props = functions(template)[service]
    # Then the function snapshots its published versions
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    # And one version is published, behind the 'live' alias (no provisioned concurrency)
    versions = template.find_resources(
        "AWS::Lambda::Version", {"Properties": {"FunctionName": {"Ref": function_id}}}
    )
    (version_id,) = versions
    # And a later deploy deletes it instead of keeping its snapshot cached (and billed)
    assert versions[version_id]["DeletionPolicy"] == "Delete"
    aliases = template.find_resources(
        "AWS::Lambda::Alias",
        {
            "Properties": {
                "FunctionName": {"Ref": function_id},
                "Name": "live",
                "FunctionVersion": {"Fn::GetAtt": [version_id, "Version"]},
            }
        },
    )
    (alias_id,) = aliases
    assert "ProvisionedConcurrencyConfig" not in aliases[alias_id]["Properties"]
    # And the URL and the ARN output point at the alias, the only way to reach the snapshot
    url = url_of(template, function_id)
    assert url["Qualifier"] == "live"
    outputs = template.to_json()["Outputs"]
    assert outputs[f"{name}FunctionArn"]["Value"] == {"Ref": alias_id}
    url_ids = [
        logical_id
        for logical_id, resource in template.find_resources("AWS::Lambda::Url").items()
        if resource["Properties"] == url
    ]
    assert outputs[f"{name}FunctionUrl"]["Value"] == {"Fn::GetAtt": [*url_ids, "FunctionUrl"]}
    # And in API-key mode anyone may invoke the alias through its URL, nothing more
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunctionUrl",
            "FunctionName": {"Ref": alias_id},
            "Principal": "*",
            "FunctionUrlAuthType": "NONE",
        },
    )


def test_snap_start_off_publishes_nothing(template: Template) -> None:
    template.resource_count_is("AWS::Lambda::Version", 0)
    template.resource_count_is("AWS::Lambda::Alias", 0)
    assert not template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"SnapStart": Match.any_value()}}
    )


def test_generator_url_can_be_buffered(snapstart_template: Template) -> None:
    function_id, props = functions(snapstart_template)["llama"]
    assert url_of(snapstart_template, function_id)["InvokeMode"] == "BUFFERED"
    assert props["Environment"]["Variables"]["FUNCTION_URL_INVOKE_MODE"] == "BUFFERED"
    snapstart_template.resource_properties_count_is("AWS::Lambda::Url", {"InvokeMode": "RESPONSE_STREAM"}, 0)


def test_log_level_uses_lambdas_names_and_keeps_powertools_in_step(snapstart_template: Template) -> None:
    # Given log_level=WARNING: Lambda calls that level WARN
    for _, props in functions(snapstart_template).values():
        assert props["LoggingConfig"] == {
            "ApplicationLogLevel": "WARN",
            "LogFormat": "JSON",
            "LogGroup": props["LoggingConfig"]["LogGroup"],
        }
        assert props["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == "WARNING"


def test_api_key_mode_caps_each_function_unless_it_has_its_own_reserved_concurrency(
    api_key_template: Template,
) -> None:
    fns = functions(api_key_template)
    assert fns["llama"][1]["ReservedConcurrentExecutions"] == 10  # public_url_reserved_concurrency
    assert fns["embeddings"][1]["ReservedConcurrentExecutions"] == 2  # its own value wins


def test_api_key_mode_cap_can_be_turned_off(snapstart_template: Template) -> None:
    for _, props in functions(snapstart_template).values():
        assert "ReservedConcurrentExecutions" not in props


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"llama_snap_start": "true", "llama_provisioned_concurrency": "1"},
            r"llama_snap_start = 'true': Lambda SnapStart does not support provisioned concurrency "
            r"\(llama_provisioned_concurrency is 1",
        ),
        (
            {"embeddings_snap_start": "true", "embeddings_ephemeral_storage_mb": "1024"},
            r"embeddings_snap_start = 'true': Lambda SnapStart does not support ephemeral storage above "
            r"512 MB \(embeddings_ephemeral_storage_mb is 1024",
        ),
    ],
)
def test_snap_start_with_what_it_does_not_support_fails_synth(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_app({**cdk_json_context(), **overrides})


def rules_refusing(template: Template, regions: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rules whose one assertion is: the deploy region is none of ``regions``."""
    return [
        rule
        for rule in template.to_json().get("Rules", {}).values()
        if [assertion["Assert"] for assertion in rule["Assertions"]]
        == [{"Fn::Not": [{"Fn::Contains": [list(regions), {"Ref": "AWS::Region"}]}]}]
    ]


def test_a_rule_refuses_regions_without_function_urls_before_anything_is_created(template: Template) -> None:
    # Given the environment-agnostic template, then a rule checks the deploy region
    (rule,) = rules_refusing(template, FUNCTION_URL_UNSUPPORTED_REGIONS)
    assert "RuleCondition" not in rule  # always applies
    # And its message says why and what to do
    description = rule["Assertions"][0]["AssertDescription"]
    assert description.startswith("Lambda Function URLs do not exist in this region")
    assert "AWS_REGION or --region" in description
    assert "eu-central-2" in description
    # And without SnapStart there is no SnapStart rule
    assert rules_refusing(template, SNAPSTART_UNSUPPORTED_REGIONS) == []


def test_a_rule_refuses_regions_without_snap_start_when_it_is_on(snapstart_template: Template) -> None:
    (rule,) = rules_refusing(snapstart_template, SNAPSTART_UNSUPPORTED_REGIONS)
    description = rule["Assertions"][0]["AssertDescription"]
    assert description.startswith("Lambda SnapStart does not exist in this region")
    assert "Set llama_snap_start=false and embeddings_snap_start=false" in description
    assert len(rules_refusing(snapstart_template, FUNCTION_URL_UNSUPPORTED_REGIONS)) == 1
