"""One inference function: container image, execution role, log group and Function URL.

Both functions of the stack (the llama.cpp generator and the embeddings
service) are this construct with different images and settings; what differs
between them lives in the image folders and in the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import FunctionConfig, LogLevel
from stacks.image_asset import image_code

ALIAS_NAME = "live"
"""The alias that carries provisioned concurrency (and then serves the URL)."""

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

_ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}
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


class InferenceFunction(Construct):
    """A Lambda function from a Docker image asset under ``lambda_images/<folder>/``.

    Exposes ``function``, ``role``, ``log_group``, ``url`` and ``invoke_target``
    (the alias when provisioned concurrency is on, else the function: what
    callers should invoke). The role may only write to ``log_group``; the
    stack grants anything else.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        folder: str,
        description: str,
        settings: FunctionConfig,
        build_args: Mapping[str, str],
        model_local_path: str | None,
        images_dir: Path,
        hf_token_file: Path | None,
        service_name: str,
        log_level: LogLevel,
        log_retention_days: int,
        url_auth_type: lambda_.FunctionUrlAuthType,
        cors_allowed_origins: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=_RETENTION[log_retention_days],
            # `cdk destroy` removes the logs too: nothing keeps costing after a teardown.
            removal_policy=RemovalPolicy.DESTROY,
        )

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of the {folder} function: writes its own log group only",
        )
        # Lambda picks log stream names at run time, so streams are matched by the
        # log group's ARN, which ends in ':*' (the group's streams, nothing else).
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )

        environment = {
            "POWERTOOLS_SERVICE_NAME": service_name,
            "POWERTOOLS_LOG_LEVEL": log_level,
        }
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
            architecture=_ARCHITECTURES[settings.architecture],
            memory_size=settings.memory_mb,
            timeout=Duration.seconds(settings.timeout_s),
            ephemeral_storage_size=Size.mebibytes(settings.ephemeral_storage_mb),
            reserved_concurrent_executions=settings.reserved_concurrency,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment=environment,
        )

        self.alias: lambda_.Alias | None = None
        self.invoke_target: lambda_.IFunction = self.function
        if settings.provisioned_concurrency > 0:
            self.alias = lambda_.Alias(
                self,
                "Alias",
                alias_name=ALIAS_NAME,
                version=self.function.current_version,
                provisioned_concurrent_executions=settings.provisioned_concurrency,
            )
            self.invoke_target = self.alias

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
            invoke_mode=lambda_.InvokeMode.BUFFERED,
            cors=cors,
        )
