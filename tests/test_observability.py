"""The dashboard, the alarms, their topic and the tracing settings in the synthesized template.

Templates are built in-process with aws_cdk.assertions from cdk.json's context
plus overrides, once per configuration; resources are found by type and
properties, never by logical ID. ``metric_references`` reads every handler
metric a dashboard widget or an alarm names; tests/test_metrics_local.py
compares those with the EMF records the running functions write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from app import build_app, cdk_json_context
from tests.test_template_lint import cfn_lint

Synth = Callable[[dict[str, Any]], tuple[Template, Path]]

LAMBDA = "AWS/Lambda"


@dataclass(frozen=True)
class MetricRef:
    """A handler metric that a widget or an alarm names: its dimensions, with a value where fixed."""

    namespace: str
    name: str
    dimensions: frozenset[tuple[str, str | None]]
    """(name, value); value None: any value (a SEARCH over that dimension)."""
    where: str


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    def run(overrides: dict[str, Any]) -> tuple[Template, Path]:
        outdir = tmp_path_factory.mktemp("cdk.out")
        app, stack = build_app({**cdk_json_context(), **overrides}, outdir=str(outdir))
        app.synth()  # cdk-nag: an unacknowledged finding fails here
        return Template.from_stack(stack), outdir / stack.template_file

    return run


@pytest.fixture(scope="module")
def default(synth: Synth) -> Template:
    return synth({})[0]


OBSERVED = {
    "tracing_enabled": "true",
    "alarm_email": "ops@example.com",
    "metrics_namespace": "Team/Inference",
    "llama_snap_start": "true",
    "llama_reserved_concurrency": "3",
    "embeddings_daily_token_budget": "none",
}


@pytest.fixture(scope="module")
def observed(synth: Synth) -> tuple[Template, Path]:
    """Tracing, an alarm e-mail, a namespace of its own, SnapStart and a reservation on the generator."""
    return synth(OBSERVED)


@pytest.fixture(scope="module")
def observed_template(observed: tuple[Template, Path]) -> Template:
    return observed[0]


# --- reading the dashboard and the alarms -------------------------------------------------------


def _rendered(value: Any) -> str:
    """A template value as text: intrinsic functions become ``${...}`` placeholders."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_rendered(part) for part in parts)
    return token(value)


def token(value: Any) -> str:
    """The placeholder of an intrinsic function inside rendered text (no quotes: it sits in JSON strings)."""
    return "${" + json.dumps(value, sort_keys=True).replace('"', "'") + "}"


def dashboard_bodies(template: Template) -> list[dict[str, Any]]:
    return [
        json.loads(_rendered(resource["Properties"]["DashboardBody"]))
        for resource in template.find_resources("AWS::CloudWatch::Dashboard").values()
    ]


def widgets(template: Template) -> list[dict[str, Any]]:
    (body,) = dashboard_bodies(template)
    found: list[dict[str, Any]] = body["widgets"]
    return found


def widget(template: Template, title: str) -> dict[str, Any]:
    (found,) = [w for w in widgets(template) if w["properties"].get("title") == title]
    return found


_SEARCH = re.compile(r"SEARCH\('\{(?P<keys>[^}]*)\}(?P<terms>[^']*)'")
_TERM = re.compile(r'(?P<key>\w+)="(?P<value>[^"]*)"')


def _from_search(expression: str, where: str) -> MetricRef:
    match = _SEARCH.search(expression)
    assert match is not None, expression
    namespace, *keys = [json.loads(k) if k.startswith('"') else k for k in match["keys"].split(",")]
    terms = {m["key"]: m["value"] for m in _TERM.finditer(match["terms"])}
    name = terms.pop("MetricName")
    dims = frozenset((key, terms.get(key)) for key in keys)
    return MetricRef(namespace, name, dims, where)


def _widget_refs(body: dict[str, Any]) -> Iterator[MetricRef]:
    for item in body["widgets"]:
        title = item["properties"].get("title", "")
        for line in item["properties"].get("metrics", []):
            if isinstance(line[0], dict):  # a math expression
                expression = line[0]["expression"]
                if "SEARCH(" in expression:
                    yield _from_search(expression, f"widget {title!r}")
                continue
            names = [part for part in line if not isinstance(part, dict)]
            namespace, metric, *pairs = names
            if namespace == ".":  # CDK's shorthand: repeat the previous line's fields
                continue
            dims = frozenset(zip(pairs[::2], pairs[1::2], strict=True))
            yield MetricRef(namespace, metric, dims, f"widget {title!r}")


def _alarm_refs(template: Template) -> Iterator[MetricRef]:
    for alarm in template.find_resources("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        where = f"alarm {props.get('AlarmDescription', '')[:40]!r}"
        stats = (
            [props]
            if "MetricName" in props
            else [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
        )
        for stat in stats:
            dims = frozenset((d["Name"], _rendered(d["Value"])) for d in stat.get("Dimensions", []))
            yield MetricRef(stat["Namespace"], stat["MetricName"], dims, where)


def metric_references(template: Template) -> set[MetricRef]:
    """Every handler metric (not AWS/Lambda's) the dashboard and the alarms name."""
    refs = set(_alarm_refs(template))
    for body in dashboard_bodies(template):
        refs |= set(_widget_refs(body))
    return {ref for ref in refs if ref.namespace != LAMBDA}


def alarms(template: Template) -> dict[str, dict[str, Any]]:
    """Alarms by the start of their description (stable, unlike logical IDs)."""
    return {
        a["Properties"]["AlarmDescription"]: a["Properties"]
        for a in template.find_resources("AWS::CloudWatch::Alarm").values()
    }


def alarm_stats(props: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """(namespace, metric, statistic, period) of each metric an alarm reads, in either template form."""
    if "MetricName" in props:
        stat = props.get("Statistic") or props["ExtendedStatistic"]
        return [(props["Namespace"], props["MetricName"], stat, props["Period"])]
    return [
        (
            m["MetricStat"]["Metric"]["Namespace"],
            m["MetricStat"]["Metric"]["MetricName"],
            m["MetricStat"]["Stat"],
            m["MetricStat"]["Period"],
        )
        for m in props["Metrics"]
        if "MetricStat" in m
    ]


def alarm(template: Template, fragment: str) -> dict[str, Any]:
    (found,) = [props for description, props in alarms(template).items() if fragment in description]
    return found


def functions(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]: (logical_id, props)
        for logical_id, resource in template.find_resources("AWS::Lambda::Function").items()
        if (props := resource["Properties"])
    }


# --- the dashboard ------------------------------------------------------------------------------


def test_a_dashboard_named_after_the_stack_by_default(default: Template) -> None:
    default.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    default.has_resource_properties("AWS::CloudWatch::Dashboard", {"DashboardName": "LlmInference"})


@pytest.mark.parametrize(("service", "timeout_ms"), [("llama", 300_000), ("embeddings", 60_000)])
def test_duration_percentiles_are_drawn_against_the_timeout(
    default: Template, service: str, timeout_ms: int
) -> None:
    found = widget(default, f"{service}: duration (ms) against the {timeout_ms // 1000} s timeout")
    stats = [line[-1]["stat"] for line in found["properties"]["metrics"]]
    assert stats == ["p50", "p95", "p99", "Maximum"]
    lines = {a["label"]: a["value"] for a in found["properties"]["annotations"]["horizontal"]}
    assert lines == {"timeout": timeout_ms, "alarm": timeout_ms * 0.9}


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_invocations_errors_throttles_and_concurrency_come_from_lambda(
    default: Template, service: str
) -> None:
    logical_id, _ = functions(default)[service]
    counts = widget(default, f"{service}: invocations, errors, throttles")["properties"]["metrics"]
    assert [(line[0], line[1]) for line in counts] == [
        (LAMBDA, "Invocations"),
        (LAMBDA, "Errors"),
        (LAMBDA, "Throttles"),
    ]
    assert all(line[3] == token({"Ref": logical_id}) for line in counts)
    concurrency = widget(default, f"{service}: concurrent executions")["properties"]
    assert concurrency["metrics"][0][:2] == [LAMBDA, "ConcurrentExecutions"]
    assert "annotations" not in concurrency  # no reservation, nothing to draw against


def test_concurrency_is_drawn_against_a_reservation(observed_template: Template) -> None:
    found = widget(observed_template, "llama: concurrent executions against the reservation of 3")
    assert found["properties"]["annotations"]["horizontal"][0]["value"] == 3


def test_the_custom_graphs_use_the_handlers_namespace_and_service_dimension(default: Template) -> None:
    refs = metric_references(default)
    assert {ref.namespace for ref in refs} == {"LlmInference"}
    assert all(
        ("service", "llama") in ref.dimensions or ("service", "embeddings") in ref.dimensions for ref in refs
    )
    names = {ref.name for ref in refs}
    assert {
        "TokensPerSecond",
        "TimeToFirstToken",
        "PromptTokens",
        "CompletionTokens",
        "ColdStart",
        "Refusals",
        "Generations",
        "DeadlineStops",
        "Inputs",
        "InputTokens",
        "BatchLatency",
        "ServerErrors",
    } == names  # Restore only with SnapStart
    ttft = widget(default, "llama: time to first token (ms)")["properties"]
    assert [line[-1]["stat"] for line in ttft["metrics"]] == ["p50", "p95"]
    assert ttft["yAxis"]["left"]["label"] == "ms"


def test_refusals_are_drawn_by_error_code_with_a_search(default: Template) -> None:
    found = widget(default, "llama: refusals by error code")["properties"]["metrics"]
    expression = found[0][0]["expression"]
    assert expression.startswith('SEARCH(\'{"LlmInference",service,error_code} service="llama"')
    assert 'MetricName="Refusals"' in expression


def test_a_namespace_of_its_own_and_restores_with_snap_start(observed_template: Template) -> None:
    refs = metric_references(observed_template)
    assert {ref.namespace for ref in refs} == {"Team/Inference"}
    assert any(ref.name == "Restore" and ("service", "llama") in ref.dimensions for ref in refs)
    assert not any(ref.name == "Restore" and ("service", "embeddings") in ref.dimensions for ref in refs)
    for service in ("llama", "embeddings"):
        variables = functions(observed_template)[service][1]["Environment"]["Variables"]
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Team/Inference"


def test_no_dashboard_when_switched_off(synth: Synth) -> None:
    template, _ = synth({"dashboard_enabled": "false"})
    template.resource_count_is("AWS::CloudWatch::Dashboard", 0)
    template.resource_count_is("AWS::CloudWatch::Alarm", 9)


# --- the alarms ---------------------------------------------------------------------------------


def test_the_default_alarms_and_their_thresholds(default: Template) -> None:
    found = alarms(default)
    assert len(found) == 9  # 5 for the generator, 4 for the embeddings function
    throttles = alarm(default, "Requests to the llama function were throttled")
    assert alarm_stats(throttles) == [(LAMBDA, "Throttles", "Sum", 300)]
    assert (throttles["Threshold"], throttles["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    duration = alarm(default, "p95 duration of the embeddings function")
    assert alarm_stats(duration) == [(LAMBDA, "Duration", "p95", 300)]
    assert duration["Threshold"] == 54_000
    assert (duration["EvaluationPeriods"], duration["DatapointsToAlarm"]) == (3, 2)
    deadline = alarm(default, "A generation stopped at the invocation's deadline")
    assert alarm_stats(deadline) == [("LlmInference", "DeadlineStops", "Sum", 300)]
    assert deadline["Threshold"] == 1
    assert all(props["TreatMissingData"] == "notBreaching" for props in found.values())
    assert all("AlarmActions" not in props for props in found.values())  # no e-mail, no topic
    default.resource_count_is("AWS::SNS::Topic", 0)


def test_errors_count_lambda_errors_and_5xx_answers(default: Template) -> None:
    errors = alarm(default, "The llama function failed")
    expression, *stats = errors["Metrics"]
    assert expression["Expression"] == "FILL(errors, 0) + FILL(answered, 0)"
    assert {
        (s["MetricStat"]["Metric"]["Namespace"], s["MetricStat"]["Metric"]["MetricName"]) for s in stats
    } == {
        (LAMBDA, "Errors"),
        ("LlmInference", "ServerErrors"),
    }
    assert errors["Threshold"] == 1


@pytest.mark.parametrize(
    ("service", "budget", "names"),
    [
        ("llama", 1_000_000, {"PromptTokens", "CompletionTokens"}),
        ("embeddings", 50_000_000, {"InputTokens"}),
    ],
)
def test_the_daily_token_budget_sums_a_day_of_tokens(
    default: Template, service: str, budget: int, names: set[str]
) -> None:
    found = alarm(default, f"The {service} function handled more than {budget:,} tokens in a day")
    assert found["Threshold"] == budget
    assert found["ComparisonOperator"] == "GreaterThanThreshold"
    stats = alarm_stats(found)
    assert {(namespace, stat, period) for namespace, _, stat, period in stats} == {
        ("LlmInference", "Sum", 86_400)
    }
    assert {name for _, name, _, _ in stats} == names


def test_an_unset_budget_has_no_budget_alarm(observed_template: Template) -> None:
    descriptions = list(alarms(observed_template))
    assert not any("embeddings function handled more than" in d for d in descriptions)
    assert any("llama function handled more than" in d for d in descriptions)


def test_an_alarm_email_subscribes_to_a_topic_every_alarm_notifies(observed_template: Template) -> None:
    observed_template.resource_count_is("AWS::SNS::Topic", 1)
    observed_template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )
    (topic_id,) = observed_template.find_resources("AWS::SNS::Topic")
    for props in alarms(observed_template).values():
        assert props["AlarmActions"] == [{"Ref": topic_id}]
    # The topic refuses publishing without TLS (cdk-nag AwsSolutions-SNS3)
    observed_template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_no_alarms_and_no_topic_when_alarms_are_off(synth: Synth) -> None:
    template, _ = synth({"alarms_enabled": "false", "alarm_email": "ops@example.com"})
    template.resource_count_is("AWS::CloudWatch::Alarm", 0)
    template.resource_count_is("AWS::SNS::Topic", 0)
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)


# --- metrics off --------------------------------------------------------------------------------


def test_metrics_off_sets_the_powertools_switch_and_keeps_only_lambdas_figures(synth: Synth) -> None:
    template, _ = synth({"metrics_enabled": "false"})
    for service in ("llama", "embeddings"):
        variables = functions(template)[service][1]["Environment"]["Variables"]
        assert variables["POWERTOOLS_METRICS_DISABLED"] == "true"
    assert metric_references(template) == set()
    assert len(alarms(template)) == 6  # errors, throttles, duration for each; nothing custom


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_metrics_are_on_by_default_under_the_stack_name(default: Template, service: str) -> None:
    variables = functions(default)[service][1]["Environment"]["Variables"]
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "LlmInference"
    assert "POWERTOOLS_METRICS_DISABLED" not in variables


# --- tracing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_tracing_is_off_by_default(default: Template, service: str) -> None:
    _, props = functions(default)[service]
    assert "TracingConfig" not in props
    assert "TRACING_ENABLED" not in props["Environment"]["Variables"]


@pytest.mark.parametrize("service", ["llama", "embeddings"])
def test_tracing_on_is_active_xray_with_the_handlers_spans(observed_template: Template, service: str) -> None:
    _, props = functions(observed_template)[service]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Environment"]["Variables"]["TRACING_ENABLED"] == "true"
    observed_template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "Resource": "*"}
                        )
                    ]
                )
            }
        },
    )


def test_the_observed_template_passes_cfn_lint_and_cdk_nag(observed: tuple[Template, Path]) -> None:
    # Given the template with tracing, a topic and alarms (cdk-nag already passed at synth)
    template, path = observed
    urls = set(template.find_resources("AWS::Lambda::Url"))
    snap_start = {
        logical_id
        for logical_id, r in template.find_resources("AWS::Lambda::Function").items()
        if "SnapStart" in r["Properties"]
    }
    # When the real cfn-lint checks it in every commercial region
    findings = cfn_lint(path)
    # Then the only findings are the ones the region rules already refuse (URLs, SnapStart)
    unexpected = [
        f
        for f in findings
        if not (f["Rule"]["Id"] == "E3006" and f["Location"]["Path"][1] in urls)
        and not (f["Rule"]["Id"] == "E2530" and f["Location"]["Path"][1] in snap_start)
    ]
    assert unexpected == []
    acknowledged = {
        (resource["Type"], rule["id"])
        for resource in json.loads(path.read_text())["Resources"].values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    }
    assert acknowledged == {
        ("AWS::SNS::Topic", "AwsSolutions-SNS2"),
        ("AWS::IAM::Policy", "AwsSolutions-IAM5[Resource::*]"),
    }


def test_the_stack_names_the_metrics_as_the_handlers_write_them() -> None:
    # The CDK app cannot import the handlers' module (the app has no powertools), so metric and
    # dimension names are written in both; this keeps them in step without running a handler
    # (the slow tests/test_metrics_local.py checks the records the running handlers write).
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

    from lambda_common import metrics as handler
    from stacks import observability as stack

    names = [name for name, value in vars(stack).items() if name.isupper() and isinstance(value, str)]
    assert len(names) == 16
    assert {name: getattr(stack, name) for name in names} == {name: getattr(handler, name) for name in names}
    # and every metric the stack draws has a unit CloudWatch knows, for a metric the handlers write
    assert set(stack.UNITS) <= {getattr(handler, name) for name in names}
    assert set(stack.UNITS.values()) <= {unit.value for unit in MetricUnit}
