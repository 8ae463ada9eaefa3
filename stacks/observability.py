"""What a deployed stack shows about itself: a CloudWatch dashboard, alarms and their e-mail topic.

Two sources of figures: Lambda's own metrics (``AWS/Lambda``: invocations,
errors, throttles, duration, concurrency; free) and the handlers' per-request
metrics (``lambda_common.metrics``, written as EMF lines into the functions'
logs, under ``config.namespace`` with the dimension ``service``). The metric
names below are that module's; tests/test_metrics_local.py fails when a widget
or an alarm here names a metric the running handlers do not write.

docs/observability.md lists every widget and alarm, each threshold and why,
and what the custom metrics, dashboard and alarms cost a month.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.config import AppConfig

SERVICE = "service"
ERROR_CODE = "error_code"
FINISH_REASON = "finish_reason"

COLD_START = "ColdStart"
RESTORE = "Restore"
SERVER_ERRORS = "ServerErrors"
PROMPT_TOKENS = "PromptTokens"
COMPLETION_TOKENS = "CompletionTokens"
TIME_TO_FIRST_TOKEN = "TimeToFirstToken"  # noqa: S105  (a metric name)
TOKENS_PER_SECOND = "TokensPerSecond"
DEADLINE_STOPS = "DeadlineStops"
INPUTS = "Inputs"
INPUT_TOKENS = "InputTokens"
BATCH_LATENCY = "BatchLatency"
GENERATIONS = "Generations"
REFUSALS = "Refusals"

UNITS = {
    COLD_START: "Count",
    RESTORE: "Count",
    SERVER_ERRORS: "Count",
    PROMPT_TOKENS: "Count",
    COMPLETION_TOKENS: "Count",
    TIME_TO_FIRST_TOKEN: "Milliseconds",
    TOKENS_PER_SECOND: "Count/Second",
    DEADLINE_STOPS: "Count",
    INPUTS: "Count",
    INPUT_TOKENS: "Count",
    BATCH_LATENCY: "Milliseconds",
    GENERATIONS: "Count",
    REFUSALS: "Count",
}
"""The unit each handler metric is written with (the dashboard's axis labels say it)."""
AXIS_LABELS = {"Count": "count", "Milliseconds": "ms", "Count/Second": "per second"}

PERIOD = Duration.minutes(5)
HOUR = Duration.hours(1)
DAY = Duration.days(1)
DURATION_ALARM_SHARE = 0.9
"""The duration alarm fires when p95 duration passes this share of the timeout."""
WIDTH = 8
HEIGHT = 6


@dataclass(frozen=True)
class ObservedFunction:
    """One function as the dashboard and the alarms need it."""

    key: str
    """``llama`` or ``embeddings``: the ``service`` dimension of its metrics."""
    title: str
    function: lambda_.IFunction
    timeout_s: int
    reserved_concurrency: int | None
    snap_start: bool
    daily_token_budget: int | None
    generates: bool
    """The generator (tokens in and out, time to first token) rather than the embeddings function."""


class Observability(Construct):
    """The dashboard (``dashboard``), the alarms (``alarms``) and, with an e-mail, the ``topic``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        functions: Sequence[ObservedFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        self.namespace = config.namespace
        self.custom = config.metrics_enabled
        self.dashboard: cw.Dashboard | None = None
        self.alarms: list[cw.Alarm] = []
        self.topic: sns.Topic | None = None

        if config.dashboard_enabled:
            self.dashboard = cw.Dashboard(
                self,
                "Dashboard",
                dashboard_name=config.stack_name,
                default_interval=Duration.hours(3),
            )
            for part in functions:
                self.dashboard.add_widgets(*self._row(part))

        if config.alarms_enabled:
            if config.alarm_email is not None:
                self.topic = sns.Topic(
                    self,
                    "AlarmTopic",
                    display_name=f"{config.stack_name} alarms",
                    enforce_ssl=True,
                )
                self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
                cfn_topic = self.topic.node.default_child
                assert cfn_topic is not None  # an sns.Topic always has its CfnTopic
                Validations.of(cfn_topic).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions-SNS2",
                        reason=(
                            "Alarm notifications carry no secret (alarm names, states, thresholds). "
                            "CloudWatch cannot publish to a topic encrypted with the AWS managed key, and "
                            "a customer managed key would cost $1 a month for nothing kept secret."
                        ),
                    )
                )
            for part in functions:
                self.alarms += self._alarms(part)
            if self.topic is not None:
                action = cw_actions.SnsAction(self.topic)
                for alarm in self.alarms:
                    alarm.add_alarm_action(action)

    # ------------------------------------------------------------------ metrics

    def metric(
        self, part: ObservedFunction, name: str, statistic: str, period: Duration = PERIOD
    ) -> cw.Metric:
        """One of the handlers' metrics of ``part`` (dimension ``service``)."""
        return cw.Metric(
            namespace=self.namespace,
            metric_name=name,
            dimensions_map={SERVICE: part.key},
            statistic=statistic,
            period=period,
            label=f"{name} {statistic}",
        )

    @staticmethod
    def axis(name: str) -> cw.YAxisProps:
        """The y axis of a graph of ``name``, labelled with its unit."""
        return cw.YAxisProps(label=AXIS_LABELS[UNITS[name]], show_units=False)

    def search(self, part: ObservedFunction, name: str, dimension: str, label: str) -> cw.MathExpression:
        """Every value of ``dimension`` that ``name`` has been written with, one line each."""
        query = (
            f"{{{json.dumps(self.namespace)},{SERVICE},{dimension}}} "
            f'{SERVICE}="{part.key}" MetricName="{name}"'
        )
        return cw.MathExpression(
            expression=f"SEARCH('{query}', 'Sum', {int(PERIOD.to_seconds())})",
            label=label,
            period=PERIOD,
        )

    # ------------------------------------------------------------------ dashboard

    @staticmethod
    def graph(
        part: ObservedFunction,
        title: str,
        left: Sequence[cw.IMetric],
        *,
        axis_of: str | None = None,
        right: Sequence[cw.IMetric] = (),
        annotations: Sequence[cw.HorizontalAnnotation] = (),
    ) -> cw.GraphWidget:
        """A graph in ``part``'s row, titled ``<key>: <title>``, left axis labelled in ``axis_of``'s unit."""
        return cw.GraphWidget(
            title=f"{part.key}: {title}",
            left=list(left),
            left_y_axis=Observability.axis(axis_of) if axis_of is not None else None,
            right=list(right) or None,
            left_annotations=list(annotations) or None,
            width=WIDTH,
            height=HEIGHT,
        )

    def _row(self, part: ObservedFunction) -> list[cw.IWidget]:
        fn = part.function
        timeout_ms = part.timeout_s * 1000
        reserved = part.reserved_concurrency
        widgets: list[cw.IWidget] = [
            cw.TextWidget(markdown=f"## {part.title}", width=24, height=1),
            self.graph(
                part,
                "invocations, errors, throttles",
                [
                    fn.metric_invocations(statistic="Sum", period=PERIOD),
                    fn.metric_errors(statistic="Sum", period=PERIOD),
                    fn.metric_throttles(statistic="Sum", period=PERIOD),
                ],
            ),
            self.graph(
                part,
                f"duration (ms) against the {part.timeout_s} s timeout",
                [
                    fn.metric_duration(statistic=stat, period=PERIOD, label=stat)
                    for stat in ("p50", "p95", "p99", "Maximum")
                ],
                annotations=[
                    cw.HorizontalAnnotation(value=timeout_ms, label="timeout", color=cw.Color.RED),
                    cw.HorizontalAnnotation(
                        value=timeout_ms * DURATION_ALARM_SHARE, label="alarm", color=cw.Color.ORANGE
                    ),
                ],
            ),
            self.graph(
                part,
                "concurrent executions" + (f" against the reservation of {reserved}" if reserved else ""),
                [fn.metric("ConcurrentExecutions", statistic="Maximum", period=PERIOD)],
                annotations=(
                    [cw.HorizontalAnnotation(value=reserved, label="reserved", color=cw.Color.RED)]
                    if reserved
                    else []
                ),
            ),
        ]
        if self.custom:
            widgets += self._custom_widgets(part)
        return widgets

    def _custom_widgets(self, part: ObservedFunction) -> list[cw.IWidget]:
        starts: list[cw.IMetric] = [
            self.metric(part, COLD_START, "Sum"),
            cw.MathExpression(
                expression="100 * cold",
                using_metrics={"cold": self.metric(part, COLD_START, "Average")},
                label="cold-start share (%)",
                period=PERIOD,
            ),
        ]
        if part.snap_start:
            starts.append(self.metric(part, RESTORE, "Sum"))
        common: list[cw.IWidget] = [
            self.graph(part, "cold starts", starts, axis_of=COLD_START),
            self.graph(
                part,
                "refusals by error code",
                [self.search(part, REFUSALS, ERROR_CODE, "")],
                axis_of=REFUSALS,
                right=[self.metric(part, SERVER_ERRORS, "Sum")],
            ),
        ]
        if part.generates:
            return [
                self.graph(
                    part,
                    "generation speed (tokens/s)",
                    [
                        self.metric(part, TOKENS_PER_SECOND, "Average"),
                        self.metric(part, TOKENS_PER_SECOND, "p50"),
                    ],
                    axis_of=TOKENS_PER_SECOND,
                ),
                self.graph(
                    part,
                    "time to first token (ms)",
                    [self.metric(part, TIME_TO_FIRST_TOKEN, stat) for stat in ("p50", "p95")],
                    axis_of=TIME_TO_FIRST_TOKEN,
                ),
                self.graph(
                    part,
                    "tokens in and out per hour",
                    [
                        self.metric(part, PROMPT_TOKENS, "Sum", HOUR),
                        self.metric(part, COMPLETION_TOKENS, "Sum", HOUR),
                    ],
                    axis_of=PROMPT_TOKENS,
                ),
                self.graph(
                    part,
                    "finish reasons and deadline stops",
                    [self.search(part, GENERATIONS, FINISH_REASON, "")],
                    axis_of=GENERATIONS,
                    right=[self.metric(part, DEADLINE_STOPS, "Sum")],
                ),
                *common,
            ]
        return [
            self.graph(
                part,
                "inputs and tokens per hour",
                [self.metric(part, INPUT_TOKENS, "Sum", HOUR)],
                axis_of=INPUT_TOKENS,
                right=[self.metric(part, INPUTS, "Sum", HOUR)],
            ),
            self.graph(
                part,
                "batch latency (ms)",
                [self.metric(part, BATCH_LATENCY, stat) for stat in ("p50", "p95")],
                axis_of=BATCH_LATENCY,
            ),
            *common,
        ]

    # ------------------------------------------------------------------ alarms

    def _alarms(self, part: ObservedFunction) -> list[cw.Alarm]:
        fn = part.function
        name = part.key.capitalize()
        errors: cw.IMetric = fn.metric_errors(statistic="Sum", period=PERIOD)
        if self.custom:
            errors = cw.MathExpression(
                expression="FILL(errors, 0) + FILL(answered, 0)",
                using_metrics={"errors": errors, "answered": self.metric(part, SERVER_ERRORS, "Sum")},
                label="function errors + 5xx answers",
                period=PERIOD,
            )
        alarms = [
            cw.Alarm(
                self,
                f"{name}Errors",
                metric=errors,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=(
                    f"The {part.key} function failed (a Lambda error: crash, timeout, out of memory) "
                    "or answered with a 5xx, at least once in 5 minutes."
                ),
            ),
            cw.Alarm(
                self,
                f"{name}Throttles",
                metric=fn.metric_throttles(statistic="Sum", period=PERIOD),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=(
                    f"Requests to the {part.key} function were throttled (429): concurrency ran out "
                    "(its reservation, or the account's limit)."
                ),
            ),
            cw.Alarm(
                self,
                f"{name}DurationNearTimeout",
                metric=fn.metric_duration(statistic="p95", period=PERIOD),
                threshold=part.timeout_s * 1000 * DURATION_ALARM_SHARE,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=(
                    f"p95 duration of the {part.key} function above {DURATION_ALARM_SHARE:.0%} of its "
                    f"{part.timeout_s} s timeout in 2 of the last 3 five-minute periods."
                ),
            ),
        ]
        if not self.custom:
            return alarms
        if part.generates:
            alarms.append(
                cw.Alarm(
                    self,
                    f"{name}DeadlineStops",
                    metric=self.metric(part, DEADLINE_STOPS, "Sum"),
                    threshold=1,
                    evaluation_periods=1,
                    comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                    alarm_description=(
                        "A generation stopped at the invocation's deadline (a cut answer, finish_reason "
                        "deadline) at least once in 5 minutes."
                    ),
                )
            )
        if part.daily_token_budget is not None:
            if part.generates:
                tokens: cw.IMetric = cw.MathExpression(
                    expression="FILL(prompt, 0) + FILL(completion, 0)",
                    using_metrics={
                        "prompt": self.metric(part, PROMPT_TOKENS, "Sum", DAY),
                        "completion": self.metric(part, COMPLETION_TOKENS, "Sum", DAY),
                    },
                    label="tokens in and out, 24 h",
                    period=DAY,
                )
            else:
                tokens = self.metric(part, INPUT_TOKENS, "Sum", DAY)
            alarms.append(
                cw.Alarm(
                    self,
                    f"{name}DailyTokenBudget",
                    metric=tokens,
                    threshold=part.daily_token_budget,
                    evaluation_periods=1,
                    comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                    alarm_description=(
                        f"The {part.key} function handled more than {part.daily_token_budget:,} tokens in a "
                        f"day ({part.key}_daily_token_budget): tokens are its cost."
                    ),
                )
            )
        return alarms
