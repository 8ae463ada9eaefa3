"""The synthesized templates pass the real cfn-lint, in every commercial region, and cdk-nag.

cfn-lint checks each template against the CloudFormation schema of every
region in the commercial ("aws") partition: the regions cfn-lint ships
schemas for, kept to those botocore's endpoint data places in that partition.
The only findings allowed are the ones the template's region rules answer:
E3006 (``AWS::Lambda::Url`` does not exist) in the regions without Function
URLs, and E2530 (SnapStart not supported) in the regions without SnapStart,
when a function turns it on (``stacks.regions`` holds both lists).

Ignored cfn-lint rules, each with its reason:

- W3005 (DependsOn already enforced by a GetAtt): aws-cdk-lib's Function adds an
  explicit DependsOn on its execution role and that role's policy; the one on
  the role repeats the GetAtt of the role's ARN. Redundant, harmless, and
  emitted by the library rather than by this app.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import botocore.loaders
import cfnlint.helpers
import pytest
from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from app import build_app, cdk_json_context
from stacks.regions import FUNCTION_URL_UNSUPPORTED_REGIONS, SNAPSTART_UNSUPPORTED_REGIONS

CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
IGNORED_CFN_LINT_RULES = ("W3005",)


def commercial_regions() -> tuple[str, ...]:
    """cfn-lint's regions that botocore's endpoint data puts in the commercial partition."""
    partitions = botocore.loaders.create_loader().load_data("endpoints")["partitions"]
    (commercial,) = [partition for partition in partitions if partition["partition"] == "aws"]
    return tuple(region for region in cfnlint.helpers.REGIONS if re.match(commercial["regionRegex"], region))


REGIONS = commercial_regions()

CFN_LINT_HAS_URL = frozenset({"eu-south-2"})
CFN_LINT_LACKS_URL = frozenset({"mx-central-1"})
"""Where cfn-lint's CloudFormation schemas (1.58.0) disagree with Lambda's Function URL page.

The schema of eu-south-2 has AWS::Lambda::Url although the Lambda docs say URLs are not
supported there (the template's rule refuses it); the schema of mx-central-1 lacks it although
the docs do not exclude that region (the rule lets it through; if CloudFormation there lacks the
type, it refuses the template at validation, before creating anything). A cfn-lint or docs
update that changes either fails the test below: then re-read both and update stacks/regions.py.
"""

URL_LINT_REGIONS = (frozenset(FUNCTION_URL_UNSUPPORTED_REGIONS) - CFN_LINT_HAS_URL) | CFN_LINT_LACKS_URL
"""The regions where cfn-lint must report E3006 for each Function URL, and no others."""

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
    "snapstart-buffered-debug": {
        "llama_snap_start": "true",
        "embeddings_snap_start": "true",
        "llama_url_invoke_mode": "BUFFERED",
        "log_level": "DEBUG",
    },
}

EXPECTED_ACKNOWLEDGEMENTS = {
    "default": set(),
    "api-key-arm64": {("AWS::SecretsManager::Secret", "AwsSolutions-SMG4")},
    "snapstart-buffered-debug": set(),
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


def cfn_lint(template_path: Path) -> list[dict[str, Any]]:
    """The real cfn-lint's findings for every commercial region, in its JSON format."""
    result = subprocess.run(
        [
            CFN_LINT,
            "--format",
            "json",
            "--regions",
            *REGIONS,
            "--ignore-checks",
            *IGNORED_CFN_LINT_RULES,
            "--",
            str(template_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stderr == ""
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return findings


def test_the_commercial_regions_are_the_known_ones() -> None:
    # The lint covers every commercial region cfn-lint knows, GovCloud, China and ISO excluded
    assert {"us-east-1", "eu-west-1", "ap-southeast-1", "mx-central-1", "eu-south-2"} <= set(REGIONS)
    assert not [r for r in REGIONS if r.startswith(("cn-", "us-gov-", "us-iso", "eu-isoe-", "eusc-"))]
    assert len(REGIONS) >= 34


def test_cfn_lint_reports_only_what_the_region_rules_refuse(synthesized: dict[str, Any]) -> None:
    # Given the template's resources
    template = json.loads(synthesized["template_path"].read_text())
    resources = template["Resources"]
    urls = {logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::Lambda::Url"}
    snap_start = {
        logical_id
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function" and "SnapStart" in r["Properties"]
    }
    # When the real cfn-lint checks it against every commercial region's schema
    findings = cfn_lint(synthesized["template_path"])
    # Then every finding is a Function URL in a region without them, or SnapStart where it is not offered
    missing_url_regions: dict[str, set[str]] = defaultdict(set)
    snap_start_regions: dict[str, set[str]] = defaultdict(set)
    unexpected = []
    for finding in findings:
        rule, message = finding["Rule"]["Id"], finding["Message"]
        resource = finding["Location"]["Path"][1]
        url_missing = re.fullmatch(
            r"Resource type 'AWS::Lambda::Url' does not exist in '([a-z0-9-]+)'", message
        )
        if rule == "E3006" and url_missing and resource in urls:
            missing_url_regions[resource].add(url_missing[1])
        elif rule == "E2530" and resource in snap_start and "SnapStart" in message:
            snap_start_regions[resource] |= set(re.findall(r"'([a-z]{2}-[a-z]+-[0-9])'", message))
        else:
            unexpected.append(f"{rule} {resource}: {message}")
    assert unexpected == []
    # And exactly in the regions the template's rules refuse (cfn-lint's known differences aside)
    assert dict(missing_url_regions) == dict.fromkeys(urls, URL_LINT_REGIONS)
    assert dict(snap_start_regions) == dict.fromkeys(snap_start, frozenset(SNAPSTART_UNSUPPORTED_REGIONS))
    assert (synthesized["name"] == "snapstart-buffered-debug") == bool(snap_start)


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
