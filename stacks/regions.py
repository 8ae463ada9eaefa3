"""AWS regions where a part of this stack does not exist, each list kept once.

The stack is environment-agnostic (the region is known only at deploy time), so
the template carries these lists as CloudFormation rules that refuse a deploy
before anything is created (``stacks.inference_stack``), and the preflight
command checks the user's region against them before a deploy starts. This
module uses the standard library only: the client package imports it without
the CDK.

Re-check both lists when AWS opens a region or extends a feature; each names
its source and the date it was read. ``function_url_refusal`` and
``snapstart_refusal`` word the template rules' refusals.
"""

from __future__ import annotations

from collections.abc import Sequence

FUNCTION_URL_UNSUPPORTED_REGIONS: tuple[str, ...] = (
    "ap-east-2",  # Asia Pacific (Taipei)
    "ap-south-2",  # Asia Pacific (Hyderabad)
    "ap-southeast-4",  # Asia Pacific (Melbourne)
    "ap-southeast-5",  # Asia Pacific (Malaysia)
    "ap-southeast-6",  # Asia Pacific (New Zealand)
    "ap-southeast-7",  # Asia Pacific (Thailand)
    "ca-west-1",  # Canada West (Calgary)
    "eu-central-2",  # Europe (Zurich)
    "eu-south-2",  # Europe (Spain)
    "il-central-1",  # Israel (Tel Aviv)
    "me-central-1",  # Middle East (UAE)
)
"""Regions without Lambda Function URLs, which both functions are served by.

Source: the note at the top of "Creating and managing Lambda function URLs",
https://docs.aws.amazon.com/lambda/latest/dg/lambda-urls.html (read 2026-11-30). cfn-lint's
per-region CloudFormation schemas (1.58.0) differ in two places: they have ``AWS::Lambda::Url``
in eu-south-2, which the Lambda docs exclude, and lack it in mx-central-1, which the docs do not
exclude; the Lambda docs decide here (tests/test_template_lint.py pins both differences).
"""

SNAPSTART_UNSUPPORTED_REGIONS: tuple[str, ...] = (
    "ap-east-2",  # Asia Pacific (Taipei)
    "ap-southeast-6",  # Asia Pacific (New Zealand)
)
"""Commercial regions without Lambda SnapStart (checked only when a function turns it on).

Source: "Supported Regions" in "Improving startup performance with Lambda SnapStart",
https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html (read 2026-11-30): every
commercial region except Asia Pacific (New Zealand) and Asia Pacific (Taipei).
Both also lack Function URLs today, so the Function URL rule refuses them first.
"""


def function_url_refusal() -> str:
    """Why this stack cannot go to a region without Function URLs, and what to do (the rule's words)."""
    return (
        "Lambda Function URLs do not exist in this region, and both functions of this "
        "stack are served by one. Deploy to a region that has them (for example us-east-1, eu-west-1 "
        "or ap-southeast-1) by setting AWS_REGION or --region. Regions without them: "
        f"{', '.join(FUNCTION_URL_UNSUPPORTED_REGIONS)}."
    )


def snapstart_refusal(keys: Sequence[str]) -> str:
    """Why SnapStart, turned on by ``keys``, cannot be used in a region without it (the rule's words)."""
    return (
        f"Lambda SnapStart does not exist in this region, and {' and '.join(keys)} "
        f"turn it on. Set {' and '.join(f'{key}=false' for key in keys)} or deploy to another region. "
        f"Regions without SnapStart: {', '.join(SNAPSTART_UNSUPPORTED_REGIONS)}."
    )
