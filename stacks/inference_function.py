"""One inference function: container image, execution role, log group and Function URL.

Both functions of the stack (the llama.cpp generator and the embeddings
service) are this construct with different images and settings; what differs
between them lives in the image folders and in the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Acknowledgment, Annotations, Duration, RemovalPolicy, Size, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

from stacks.config import Architecture, FunctionConfig, LambdaLogLevel, LogLevel, UrlInvokeMode
from stacks.image_asset import image_code

ALIAS_NAME = "live"
"""The alias of the published version (SnapStart or provisioned concurrency); it then serves the URL."""

URL_INVOKE_MODE_VARIABLE = "FUNCTION_URL_INVOKE_MODE"
"""Tells the handler's runtime how its Function URL frames answers (RESPONSE_STREAM or BUFFERED)."""
METRICS_NAMESPACE_VARIABLE = "POWERTOOLS_METRICS_NAMESPACE"
"""The CloudWatch namespace of the handler's EMF metrics (lambda_common.metrics)."""
METRICS_DISABLED_VARIABLE = "POWERTOOLS_METRICS_DISABLED"
"""Set to true when metrics are off: powertools and lambda_common.metrics then write nothing."""
TRACING_VARIABLE = "TRACING_ENABLED"
"""true with active tracing: the handler then makes its X-Ray spans (lambda_common.tracing)."""

CORS_ALLOWED_METHODS = (lambda_.HttpMethod.GET, lambda_.HttpMethod.POST)
CORS_ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    # SigV4 headers a browser sends to an AWS_IAM URL:
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
)
CORS_MAX_AGE = Duration.minutes(5)

LAMBDA_ARCHITECTURES: dict[Architecture, lambda_.Architecture] = {
    "x86_64": lambda_.Architecture.X86_64,
    "arm64": lambda_.Architecture.ARM_64,
}
"""Lambda's architecture for each ``*_architecture`` setting.

The URL invoke modes and Lambda's log levels need no table: the settings use the enums' own names
(``lambda_.InvokeMode[mode]``, ``lambda_.ApplicationLogLevel[level]``, ``AppConfig.lambda_log_level``
mapping Python's WARNING and CRITICAL to Lambda's WARN and FATAL).
"""
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
"""CloudWatch retention periods (stacks.config.LOG_RETENTION_DAYS) by day count."""


def make_log_group(scope: Construct, construct_id: str, *, retention_days: int) -> logs.LogGroup:
    """A log group of this stack's own, kept ``retention_days``."""
    return logs.LogGroup(
        scope,
        construct_id,
        retention=_RETENTION[retention_days],
        # `cdk destroy` removes the logs too: nothing keeps costing after a teardown.
        removal_policy=RemovalPolicy.DESTROY,
    )


def allow_writing_log_group(role: iam.Role, log_group: logs.ILogGroup) -> None:
    """Let a function's ``role`` write its own ``log_group``, nothing else."""
    # Lambda picks log stream names at run time, so streams are matched by the
    # log group's ARN, which ends in ':*' (the group's streams, nothing else).
    role.add_to_policy(
        iam.PolicyStatement(
            sid="WriteOwnLogGroup",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )


def acknowledge_tracing_grant(scope: IConstruct) -> None:
    """Acknowledge, on ``scope``, the '*' that active tracing adds to a function's role (cdk-nag IAM5)."""
    Validations.of(scope).acknowledge(
        Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason=(
                "Active tracing: Lambda adds xray:PutTraceSegments and xray:PutTelemetryRecords "
                "on '*'; X-Ray has no resource-level permissions for these actions."
            ),
        )
    )


class InferenceFunction(Construct):
    """A Lambda function from a Docker image asset under ``lambda_images/<folder>/``.

    Exposes ``function``, ``role``, ``log_group``, ``url`` and ``invoke_target``
    (the ``live`` alias of a published version when SnapStart or provisioned
    concurrency is on, else the function: what callers should invoke). The
    role may only write to ``log_group``; the stack grants anything else.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        folder: str,
        description: str,
        settings: FunctionConfig,
        reserved_concurrency: int | None,
        url_invoke_mode: UrlInvokeMode,
        build_args: Mapping[str, str],
        model_local_path: str | None,
        images_dir: Path,
        hf_token_file: Path | None,
        service_name: str,
        log_level: LogLevel,
        lambda_log_level: LambdaLogLevel,
        log_retention_days: int,
        url_auth_type: lambda_.FunctionUrlAuthType,
        cors_allowed_origins: Sequence[str],
        metrics_namespace: str,
        metrics_enabled: bool = True,
        tracing_enabled: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.service_name = service_name
        """The ``service`` dimension of the handler's metrics (POWERTOOLS_SERVICE_NAME)."""

        self.log_group = make_log_group(self, "Logs", retention_days=log_retention_days)

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of the {folder} function: writes its own log group only",
        )
        allow_writing_log_group(self.role, self.log_group)

        environment = {
            "POWERTOOLS_SERVICE_NAME": service_name,
            # Lambda filters by the application log level below; powertools reads that one
            # (AWS_LAMBDA_LOG_LEVEL) first and this one where Lambda sets none (make local).
            "POWERTOOLS_LOG_LEVEL": log_level,
            URL_INVOKE_MODE_VARIABLE: url_invoke_mode,
            METRICS_NAMESPACE_VARIABLE: metrics_namespace,
        }
        if not metrics_enabled:
            environment[METRICS_DISABLED_VARIABLE] = "true"
        if tracing_enabled:
            environment[TRACING_VARIABLE] = "true"
        if settings.threads is not None:
            environment["N_THREADS"] = str(settings.threads)

        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            description=description[:256],  # Lambda's limit
            code=image_code(
                images_dir=images_dir,
                folder=folder,
                build_args=build_args,
                platform=settings.platform,
                model_local_path=model_local_path,
                hf_token_file=hf_token_file,
            ),
            architecture=LAMBDA_ARCHITECTURES[settings.architecture],
            memory_size=settings.memory_mb,
            timeout=Duration.seconds(settings.timeout_s),
            ephemeral_storage_size=Size.mebibytes(settings.ephemeral_storage_mb),
            reserved_concurrent_executions=reserved_concurrency,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            # Without it Lambda filters JSON logs at INFO, whatever log_level says.
            application_log_level_v2=lambda_.ApplicationLogLevel[lambda_log_level],
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if settings.snap_start else None,
            # Active: Lambda samples and records each invocation, and runs the X-Ray daemon the
            # handler's spans go to. Off by default: traces are billed per trace recorded.
            tracing=lambda_.Tracing.ACTIVE if tracing_enabled else None,
            # A deploy that changes the function publishes a new version and moves the alias;
            # the old one is deleted rather than kept (CDK's default), so no stale SnapStart
            # snapshot keeps billing its cache charge.
            current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY),
            environment=environment,
        )

        if tracing_enabled:
            # On the role's policy alone, not on everything under the role.
            policy = self.role.node.find_child("DefaultPolicy").node.default_child
            assert policy is not None  # the log-group statement above created it
            acknowledge_tracing_grant(policy)

        self.alias: lambda_.Alias | None = None
        self.invoke_target: lambda_.IFunction = self.function
        if settings.publishes_version:
            # SnapStart snapshots published versions only, and provisioned concurrency keeps
            # published versions warm: either way callers must invoke the version, via the alias.
            self.alias = lambda_.Alias(
                self,
                "Alias",
                alias_name=ALIAS_NAME,
                version=self.function.current_version,
                provisioned_concurrent_executions=settings.provisioned_concurrency or None,
            )
            self.invoke_target = self.alias
            if settings.snap_start:
                Annotations.of(self.function).acknowledge_warning(
                    "@aws-cdk/aws-lambda:snapStartRequirePublish",
                    "the 'live' alias publishes current_version, which SnapStart snapshots",
                )

        cors = (
            lambda_.FunctionUrlCorsOptions(
                allowed_origins=list(cors_allowed_origins),
                allowed_methods=list(CORS_ALLOWED_METHODS),
                allowed_headers=list(CORS_ALLOWED_HEADERS),
                max_age=CORS_MAX_AGE,
            )
            if cors_allowed_origins
            else None
        )
        self.url = self.invoke_target.add_function_url(
            auth_type=url_auth_type,
            invoke_mode=lambda_.InvokeMode[url_invoke_mode],
            cors=cors,
        )
