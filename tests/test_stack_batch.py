"""The optional bulk embedding part of the template: off by default, and what it deploys when on.

Templates are synthesized in-process (aws_cdk.assertions) from cdk.json plus
overrides, once per configuration; resources are found by their properties
and references, never by generated logical IDs. The real cfn-lint checks the
template against every commercial region's schema, and cdk-nag's AwsSolutions
checks run in the synth (an unacknowledged finding fails it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from app import build_app, cdk_json_context
from stacks.batch_embeddings import BATCH_COMMAND, MAP_LABEL, NOT_RETRIED, OUTPUT_KEYS, RESUMED, TRANSIENT
from stacks.config import ConfigError
from tests.test_stack import ref_id
from tests.test_template_lint import URL_LINT_REGIONS, cfn_lint

ON = {"batch_embeddings": "true"}
EXISTING = {
    **ON,
    "batch_embeddings_bucket_name": "my-corpus-bucket",
    "batch_embeddings_input_prefix": "corpora/",
    "batch_embeddings_output_prefix": "vectors/",
    "batch_embeddings_max_concurrency": "10",
    "batch_embeddings_items_per_batch": "200",
    "batch_embeddings_bytes_per_batch": "100000",
    "batch_embeddings_tolerated_failure_percentage": "0",
    "tracing_enabled": "true",
}


def synthesize(tmp: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    app, stack = build_app({**cdk_json_context(), **overrides}, outdir=str(tmp))
    app.synth()  # raises if cdk-nag reports an unacknowledged finding
    return {
        "template": Template.from_stack(stack),
        "path": tmp / stack.template_file,
        "assets": json.loads((tmp / f"{stack.stack_name}.assets.json").read_text()),
        "report": json.loads((tmp / "validation-report.json").read_text()),
    }


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synthesize(tmp_path_factory.mktemp("batch-off"), {})


@pytest.fixture(scope="module")
def on(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synthesize(tmp_path_factory.mktemp("batch-on"), ON)


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synthesize(tmp_path_factory.mktemp("batch-existing"), EXISTING)


def resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = template.find_resources(kind)
    return found


def batch_function(template: Template) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, resource["Properties"])
        for logical_id, resource in resources(template, "AWS::Lambda::Function").items()
        if resource["Properties"]["Environment"]["Variables"].get("POWERTOOLS_SERVICE_NAME")
        == "embeddings-batch"
    ]
    return found


def online_embeddings(template: Template) -> dict[str, Any]:
    (found,) = [
        resource["Properties"]
        for resource in resources(template, "AWS::Lambda::Function").values()
        if resource["Properties"]["Environment"]["Variables"].get("POWERTOOLS_SERVICE_NAME") == "embeddings"
    ]
    return found


def state_machine(template: Template) -> tuple[str, dict[str, Any]]:
    ((logical_id, resource),) = resources(template, "AWS::StepFunctions::StateMachine").items()
    return logical_id, resource["Properties"]


def definition(template: Template) -> dict[str, Any]:
    """The definition with every intrinsic replaced by a readable placeholder, parsed."""
    _, props = state_machine(template)
    parts = props["DefinitionString"]["Fn::Join"][1]
    text = "".join(
        part
        if isinstance(part, str)
        else "<" + (ref_id(part) if "Ref" in part or "Fn::GetAtt" in part else "?") + ">"
        for part in parts
    )
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def statements_of_role(template: Template, role_id: str) -> list[dict[str, Any]]:
    found = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        if role_id in [ref_id(role) for role in policy["Properties"]["Roles"]]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- off by default ----------------------------------------------------------------------------


def test_off_by_default_nothing_of_it_exists(off: dict[str, Any]) -> None:
    template = off["template"]
    template.resource_count_is("AWS::StepFunctions::StateMachine", 0)
    template.resource_count_is("AWS::S3::Bucket", 0)
    assert len(resources(template, "AWS::Lambda::Function")) == 2
    assert not set(OUTPUT_KEYS.values()) & set(template.to_json().get("Outputs", {}))


# --- on: what exists ---------------------------------------------------------------------------


def test_the_batch_function_is_the_online_image_with_another_command(on: dict[str, Any]) -> None:
    template, assets = on["template"], on["assets"]
    _, props = batch_function(template)
    online = online_embeddings(template)
    # Then it runs the same image as the online embeddings function, built once
    assert props["Code"]["ImageUri"] == online["Code"]["ImageUri"]
    embeddings_images = [
        image for image in assets["dockerImages"].values() if image["displayName"] == "embeddings image"
    ]
    assert len(embeddings_images) == 1
    assert len(assets["dockerImages"]) == 2  # llama and embeddings, nothing more
    # And only its command differs; it is sized by its own settings, on the embeddings' architecture
    assert props["ImageConfig"] == {"Command": BATCH_COMMAND}
    assert "ImageConfig" not in online
    assert (props["MemorySize"], props["Timeout"]) == (2048, 300)
    assert props["Architectures"] == online["Architectures"]
    assert "ReservedConcurrentExecutions" not in props
    # And it knows where it may write
    variables = props["Environment"]["Variables"]
    assert variables["BATCH_OUTPUT_PREFIX"] == "output/"
    (bucket_id,) = resources(template, "AWS::S3::Bucket").keys() - set(access_log_buckets(template))
    assert variables["BATCH_OUTPUT_BUCKET"] == {"Ref": bucket_id}


def access_log_buckets(template: Template) -> list[str]:
    return [
        logical_id
        for logical_id, bucket in resources(template, "AWS::S3::Bucket").items()
        if "LoggingConfiguration" not in bucket["Properties"]
    ]


def test_the_created_bucket_is_encrypted_tls_only_private_and_logged(on: dict[str, Any]) -> None:
    template = on["template"]
    (logs_id,) = access_log_buckets(template)
    (bucket_id,) = resources(template, "AWS::S3::Bucket").keys() - {logs_id}
    for logical_id, bucket in resources(template, "AWS::S3::Bucket").items():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        # Inputs, vectors and logs are the user's data: `cdk destroy` keeps them
        assert bucket["DeletionPolicy"] == "Retain", logical_id
    data = resources(template, "AWS::S3::Bucket")[bucket_id]["Properties"]
    assert data["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}
    logs = resources(template, "AWS::S3::Bucket")[logs_id]["Properties"]
    assert logs["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 30
    # And each bucket refuses requests without TLS
    for logical_id in (bucket_id, logs_id):
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": logical_id},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_the_state_machine_is_standard_and_logs_every_event_without_the_texts(on: dict[str, Any]) -> None:
    template = on["template"]
    _, props = state_machine(template)
    assert props["StateMachineType"] == "STANDARD"
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is False
    (destination,) = logging["Destinations"]
    group_id = ref_id(destination["CloudWatchLogsLogGroup"]["LogGroupArn"])
    group = template.to_json()["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == 30
    assert "TracingConfiguration" not in props or props["TracingConfiguration"] == {"Enabled": False}


def test_each_format_gets_a_distributed_map_with_the_configured_limits(on: dict[str, Any]) -> None:
    states = definition(on["template"])["States"]
    check = states[definition(on["template"])["StartAt"]]
    assert check["Type"] == "Choice"
    refuse = states[check["Default"]]
    assert (refuse["Type"], refuse["Error"]) == ("Fail", "InvalidRunInput")
    assert "input/" in refuse["Cause"]
    targets = {}
    for choice in check["Choices"]:
        conditions = {json.dumps(condition, sort_keys=True) for condition in choice["And"]}
        fmt = next(c["StringEquals"] for c in choice["And"] if c["Variable"] == "$.format")
        assert (
            json.dumps({"StringMatches": "input/*", "Variable": "$.input.key"}, sort_keys=True) in conditions
        )
        assert (
            json.dumps({"StringMatches": "output/*/", "Variable": "$.output.prefix"}, sort_keys=True)
            in conditions
        )
        targets[fmt] = states[choice["Next"]]
    assert set(targets) == {"jsonl", "csv"}
    assert targets["jsonl"]["ItemReader"]["ReaderConfig"] == {"InputType": "JSONL"}
    assert targets["csv"]["ItemReader"]["ReaderConfig"] == {
        "InputType": "CSV",
        "CSVHeaderLocation": "FIRST_ROW",
    }
    for state in targets.values():
        assert state["Type"] == "Map"
        assert state["ItemProcessor"]["ProcessorConfig"] == {
            "Mode": "DISTRIBUTED",
            "ExecutionType": "STANDARD",
        }
        assert state["ItemReader"]["Parameters"]["Key.$"] == "$.input.key"
        assert state["ItemSelector"] == {"index.$": "$$.Map.Item.Index", "value.$": "$$.Map.Item.Value"}
        batcher = state["ItemBatcher"]
        assert (batcher["MaxItemsPerBatch"], batcher["MaxInputBytesPerBatch"]) == (500, 204800)
        assert batcher["BatchInput"]["output"]["prefix.$"] == "$.output.prefix"
        assert batcher["BatchInput"]["options.$"] == "$.options"
        assert state["MaxConcurrency"] == 100
        assert state["ToleratedFailurePercentage"] == 5
        assert state["Label"] == MAP_LABEL
        assert (
            state["ResultWriter"]["Parameters"]["Prefix.$"] == "States.Format('{}results', $.output.prefix)"
        )


def test_each_batch_is_retried_by_what_failed(on: dict[str, Any]) -> None:
    states = definition(on["template"])["States"]
    tasks = [
        task
        for state in states.values()
        if state["Type"] == "Map"
        for task in state["ItemProcessor"]["States"].values()
    ]
    assert len(tasks) == 2
    for task in tasks:
        assert task["Resource"].endswith(":states:::lambda:invoke")
        assert task["Parameters"]["Payload.$"] == "$"
        assert task["OutputPath"] == "$.Payload"
        retries = task["Retry"]
        # Permanent errors first, never retried
        assert retries[0] == {"ErrorEquals": list(NOT_RETRIED), "MaxAttempts": 0}
        # A batch cut by the deadline resumes at once, many times
        assert retries[1]["ErrorEquals"] == [RESUMED]
        assert retries[1]["MaxAttempts"] >= 10
        # Throttling and transient failures: exponential backoff with jitter
        assert retries[2]["ErrorEquals"] == list(TRANSIENT)
        assert "Lambda.TooManyRequestsException" in retries[2]["ErrorEquals"]
        assert retries[2]["BackoffRate"] > 1
        assert retries[2]["JitterStrategy"] == "FULL"
        # Anything else: a few more tries, last
        assert retries[-1]["ErrorEquals"] == ["States.ALL"]


# --- permissions -------------------------------------------------------------------------------


def test_the_batch_function_lists_and_writes_the_output_prefix_and_reads_nothing(on: dict[str, Any]) -> None:
    template = on["template"]
    _, props = batch_function(template)
    statements = statements_of_role(template, ref_id(props["Role"]))
    actions = sorted(action for statement in statements for action in as_list(statement["Action"]))
    assert actions == ["logs:CreateLogStream", "logs:PutLogEvents", "s3:ListBucket", "s3:PutObject"]
    by_sid = {statement["Sid"]: statement for statement in statements}
    assert by_sid["ListOutputPrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["output/*"]}}
    assert json.dumps(by_sid["WriteOutputPrefix"]["Resource"]).endswith('"/output/*"]]}')
    assert not any("s3:GetObject" in json.dumps(statement) for statement in statements)
    role = template.to_json()["Resources"][ref_id(props["Role"])]["Properties"]
    assert "ManagedPolicyArns" not in role


def test_the_state_machine_reads_the_input_prefix_writes_results_and_invokes_the_batch_function(
    on: dict[str, Any],
) -> None:
    template = on["template"]
    machine_id, props = state_machine(template)
    function_id, _ = batch_function(template)
    statements = statements_of_role(template, ref_id(props["RoleArn"]))
    s3_grants = {
        tuple(sorted(as_list(statement["Action"]))): json.dumps(statement["Resource"])
        for statement in statements
        if any(action.startswith("s3:") for action in as_list(statement["Action"]))
    }
    assert set(s3_grants) == {
        ("s3:GetObject",),
        ("s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"),
    }
    assert s3_grants[("s3:GetObject",)].endswith('"/input/*"]]}')
    assert s3_grants[
        ("s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject")
    ].endswith('"/output/*"]]}')
    (invoke,) = [
        statement for statement in statements if "lambda:InvokeFunction" in as_list(statement["Action"])
    ]
    # The batch function, and its versions (ARN:*), nothing else
    assert {json.dumps(resource) for resource in as_list(invoke["Resource"])} == {
        json.dumps({"Fn::GetAtt": [function_id, "Arn"]}),
        json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [function_id, "Arn"]}, ":*"]]}),
    }
    # And the child workflows: start its own executions, describe and stop them
    child = [statement for statement in statements if "states:StartExecution" in as_list(statement["Action"])]
    assert [statement["Resource"] for statement in child] == [{"Ref": machine_id}]
    # And no grant to any other bucket, function or service
    services = {action.split(":")[0] for statement in statements for action in as_list(statement["Action"])}
    assert services == {"s3", "lambda", "states", "logs"}


def test_an_existing_bucket_is_used_by_name_with_the_same_narrow_grants(existing: dict[str, Any]) -> None:
    template = existing["template"]
    template.resource_count_is("AWS::S3::Bucket", 0)
    template.resource_count_is("AWS::S3::BucketPolicy", 0)
    _, props = batch_function(template)
    assert props["Environment"]["Variables"]["BATCH_OUTPUT_BUCKET"] == "my-corpus-bucket"
    assert props["Environment"]["Variables"]["BATCH_OUTPUT_PREFIX"] == "vectors/"
    text = json.dumps(template.to_json())
    assert ":s3:::my-corpus-bucket/corpora/*" in text
    assert ":s3:::my-corpus-bucket/vectors/*" in text
    assert ":s3:::my-corpus-bucket/*" not in text
    states = definition(template)["States"]
    maps = [state for state in states.values() if state["Type"] == "Map"]
    assert {state["MaxConcurrency"] for state in maps} == {10}
    # 0 is Step Functions' default, which CDK leaves out of the definition
    assert {state.get("ToleratedFailurePercentage", 0) for state in maps} == {0}
    assert {state["ItemBatcher"]["MaxItemsPerBatch"] for state in maps} == {200}
    _, machine = state_machine(template)
    assert machine["TracingConfiguration"] == {"Enabled": True}
    assert props["TracingConfig"] == {"Mode": "Active"}


def test_stack_outputs_name_what_the_client_needs(on: dict[str, Any]) -> None:
    outputs = on["template"].to_json()["Outputs"]
    assert set(OUTPUT_KEYS.values()) <= set(outputs)
    machine_id, _ = state_machine(on["template"])
    function_id, _ = batch_function(on["template"])
    assert outputs[OUTPUT_KEYS["state_machine"]]["Value"] == {"Ref": machine_id}
    assert outputs[OUTPUT_KEYS["function"]]["Value"] == {"Ref": function_id}
    assert outputs[OUTPUT_KEYS["input_prefix"]]["Value"] == "input/"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"batch_embeddings_output_prefix": "input/vectors/"},
            r"batch_embeddings_output_prefix = 'input/vectors/': must not overlap batch_embeddings_input",
        ),
        (
            {"batch_embeddings_bytes_per_batch": "300000"},
            r"batch_embeddings_bytes_per_batch = '300000': must be an integer from 1024 to 262144",
        ),
        (
            {"batch_embeddings_input_prefix": "/input"},
            r"batch_embeddings_input_prefix = '/input': must be an S3",
        ),
        ({"batch_embeddings_bucket_name": "Not_A_Bucket"}, r"batch_embeddings_bucket_name = 'Not_A_Bucket'"),
        (
            {"batch_embeddings_max_concurrency": "0"},
            r"batch_embeddings_max_concurrency = '0': must be an integer",
        ),
        ({"batch_embeddings": "maybe"}, r"batch_embeddings = 'maybe': must be true or false"),
    ],
)
def test_bad_batch_settings_fail_before_anything_is_built(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_app({**cdk_json_context(), **ON, **overrides})


# --- cfn-lint and cdk-nag ----------------------------------------------------------------------

EXPECTED_IAM5_RESOURCES = {
    "on": ("/input/*]", "/output/*]", ".Arn>:*]", "[Resource::*]", ":execution:", ":execution:"),
    "existing": ("/corpora/*]", "/vectors/*]", ".Arn>:*]", "[Resource::*]", ":execution:", ":execution:"),
}
"""What each acknowledged wildcard is: the input prefix, the output prefix, the batch function's versions,
log delivery and X-Ray ('*'), and the state machine's own executions (the Map run's child workflows)."""


@pytest.mark.parametrize("name", ["on", "existing"])
def test_cfn_lint_reports_nothing_but_the_url_regions(name: str, request: pytest.FixtureRequest) -> None:
    synthesized = request.getfixturevalue(name)
    unexpected = []
    for finding in cfn_lint(synthesized["path"]):
        message = finding["Message"]
        region = (
            message.rsplit("'", 2)[-2] if message.startswith("Resource type 'AWS::Lambda::Url'") else None
        )
        if finding["Rule"]["Id"] == "E3006" and region in URL_LINT_REGIONS:
            continue
        unexpected.append(f"{finding['Rule']['Id']} {finding['Location']['Path']}: {message}")
    assert unexpected == []


@pytest.mark.parametrize("name", ["on", "existing"])
def test_cdk_nag_passes_with_only_reasoned_acknowledgements(
    name: str, request: pytest.FixtureRequest
) -> None:
    synthesized = request.getfixturevalue(name)
    assert synthesized["report"]["pluginReports"] == []
    template = synthesized["template"].to_json()
    acknowledged: set[str] = set()
    for logical_id, resource in template["Resources"].items():
        if not logical_id.startswith("BatchEmbeddings"):
            continue
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            assert len(rule["reason"]) > 80, rule  # a real explanation, not a placeholder
            acknowledged.add(rule["id"])
    # Then the rules acknowledged are the expected ones: access logs of the log bucket, X-Ray when off
    rules = {finding.split("[")[0] for finding in acknowledged}
    expected_rules = {"AwsSolutions-IAM5", "AwsSolutions-S1", "AwsSolutions-SF2"}
    if name == "existing":  # not our bucket, and tracing on
        expected_rules = {"AwsSolutions-IAM5"}
    assert rules == expected_rules
    # And each wildcard is one of the known, narrow ones
    wildcards = sorted(finding for finding in acknowledged if finding.startswith("AwsSolutions-IAM5"))
    assert len(wildcards) == len(EXPECTED_IAM5_RESOURCES[name])
    for ending in EXPECTED_IAM5_RESOURCES[name]:
        assert any(ending in finding for finding in wildcards), (ending, wildcards)
