"""The synthesized templates pass the real cfn-lint and the cdk-nag AwsSolutions pack.

Ignored cfn-lint rules, each with its reason:

- W3005 (DependsOn already enforced by a GetAtt): aws-cdk-lib's Function adds an
  explicit DependsOn on its execution role and that role's policy; the one on
  the role repeats the GetAtt of the role's ARN. Redundant, harmless, and
  emitted by the library rather than by this app.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from app import build_app, cdk_json_context

CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
IGNORED_CFN_LINT_RULES = ("W3005",)
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")

CONFIGURATIONS = {
    "default": {},
    "api-key-arm64": {
        "function_url_auth": "API_KEY",
        "llama_architecture": "arm64",
        "embeddings_architecture": "arm64",
        "llama_provisioned_concurrency": "1",
        "embeddings_reserved_concurrency": "5",
        "cors_allowed_origins": "*",
        "embeddings_threads": "2",
    },
}

EXPECTED_ACKNOWLEDGEMENTS = {
    "default": set(),
    "api-key-arm64": {("AWS::SecretsManager::Secret", "AwsSolutions-SMG4")},
}
"""Every acknowledged cdk-nag finding, by resource type: adding one must be a visible decision."""


@pytest.fixture(scope="module", params=sorted(CONFIGURATIONS))
def synthesized(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    name = request.param
    outdir = tmp_path_factory.mktemp(f"cdk.out-{name}")
    app, stack = build_app({**cdk_json_context(), **CONFIGURATIONS[name]}, outdir=str(outdir))
    app.synth()  # raises if cdk-nag reports an unacknowledged finding
    return {
        "name": name,
        "template_path": outdir / stack.template_file,
        "report": json.loads((outdir / "validation-report.json").read_text()),
    }


def test_cfn_lint_reports_nothing(synthesized: dict[str, Any]) -> None:
    # When the real cfn-lint checks the synthesized template
    result = subprocess.run(
        [
            CFN_LINT,
            "--regions",
            *REGIONS,
            "--ignore-checks",
            *IGNORED_CFN_LINT_RULES,
            "--",
            str(synthesized["template_path"]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # Then there are no errors, warnings or informational findings
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_cdk_nag_reports_no_unacknowledged_finding(synthesized: dict[str, Any]) -> None:
    assert synthesized["report"]["pluginReports"] == []


def test_every_acknowledged_finding_is_expected_and_has_a_reason(synthesized: dict[str, Any]) -> None:
    template = json.loads(synthesized["template_path"].read_text())
    acknowledged = set()
    for resource in template["Resources"].values():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            assert len(rule["reason"]) > 80, rule  # a real explanation, not a placeholder
            acknowledged.add((resource["Type"], rule["id"]))
    assert acknowledged == EXPECTED_ACKNOWLEDGEMENTS[synthesized["name"]]


def test_cdk_nag_is_wired_into_the_app(tmp_path: Path) -> None:
    # Given the app with a resource that breaks an AwsSolutions rule (a wildcard IAM grant)
    app, stack = build_app(cdk_json_context(), outdir=str(tmp_path))
    add_wildcard_policy(stack)
    # When it is synthesized, then the synth fails and the report names the rule
    with pytest.raises(RuntimeError, match=r"(?s)ValidationFailed: .*AwsSolutions-IAM5"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {
        violation["ruleName"] for plugin in report["pluginReports"] for violation in plugin["violations"]
    }
    assert any(rule.startswith("AwsSolutions-IAM5") for rule in rules)


def add_wildcard_policy(stack: Stack) -> None:
    role = iam.Role(stack, "TooBroad", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=["*"]))
