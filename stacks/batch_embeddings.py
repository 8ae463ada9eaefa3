"""Bulk embedding (optional, ``batch_embeddings``): a bucket, a batch function and a Distributed Map.

One run embeds one JSON Lines or CSV object under the input prefix and writes
Parquet vectors under the output prefix (docs/batch.md). The state machine:

1. ``CheckRun`` (Choice): the format is ``jsonl`` or ``csv``, the input key is
   under the input prefix, the output prefix under the output prefix; else
   ``RefuseRun`` fails the execution with ``InvalidRunInput`` before any work.
2. ``EmbedJsonl`` / ``EmbedCsv`` (Distributed Map, Standard child workflows):
   reads the object (``ItemReader``), wraps every record with its position
   (``ItemSelector``: ``{"index", "value"}``), groups records by count and
   bytes (``ItemBatcher``, with the run's output and options as
   ``BatchInput``), runs at most ``MaxConcurrency`` batch functions at once,
   tolerates ``ToleratedFailurePercentage`` of failed items, and writes every
   child's result to ``<output prefix>results/`` (``ResultWriter``).
3. Each child invokes the batch function (``EmbedBatch``), which writes the
   vectors itself and returns counts and bad records. Retries, in order:
   the function's permanent errors never; ``BatchNotFinished`` (a deadline cut
   the batch: the rest is resumed) at once, up to 20 times; throttling, Lambda
   service errors and ``StorageUnavailable`` with exponential backoff and
   jitter; anything else twice more.

The batch function is the embeddings image asset itself (the same build, so
nothing is built twice) with the image command ``batch.lambda_handler``.

Permissions, least privilege: the state machine reads objects under the input
prefix only, writes results under the output prefix only, and invokes the
batch function; the batch function lists and writes the output prefix and
reads nothing (its items arrive in the invocation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Acknowledgment, CfnOutput, Duration, RemovalPolicy, Size, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.config import AppConfig
from stacks.image_asset import image_code
from stacks.inference_function import (
    LAMBDA_ARCHITECTURES,
    acknowledge_tracing_grant,
    allow_writing_log_group,
    make_log_group,
)

BATCH_COMMAND = ["batch.lambda_handler"]
"""The image command of the batch function (the online function keeps the image's CMD)."""
SERVICE_NAME = "embeddings-batch"
MAP_LABEL = "EmbedBatches"
FORMATS = ("jsonl", "csv")

NOT_RETRIED = ("InvalidBatch", "StorageRefused", "TimeoutTooShort")
"""The batch function's permanent errors (exception class names): retrying cannot help."""
RESUMED = "BatchNotFinished"
TRANSIENT = (
    "Lambda.TooManyRequestsException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
    "StorageUnavailable",
)
"""Throttling, Lambda's own failures and S3 trouble: retried with exponential backoff and jitter."""

OUTPUT_KEYS = {
    "bucket": "BatchEmbeddingsBucket",
    "state_machine": "BatchEmbeddingsStateMachineArn",
    "function": "BatchEmbeddingsFunctionName",
    "input_prefix": "BatchEmbeddingsInputPrefix",
    "output_prefix": "BatchEmbeddingsOutputPrefix",
}
"""The stack outputs ``python -m client embed-s3`` reads (fixed names, not generated ones)."""


def _wildcard_pattern(prefix: str) -> str:
    """``prefix`` followed by anything, as a Choice ``StringMatches`` pattern (``*`` and ``\\`` escaped)."""
    return prefix.replace("\\", "\\\\").replace("*", "\\*") + "*"


class _ReadInputPrefix(sfn.S3JsonLItemReader):
    """The JSON Lines reader, granted the input prefix only (CDK's own grant is the whole bucket)."""

    def __init__(self, *, bucket: s3.IBucket, prefix: str, key: str) -> None:
        super().__init__(bucket=bucket, key=key)
        self._grant = iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{prefix}*")]
        )

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [self._grant]


class _ReadInputPrefixCsv(sfn.S3CsvItemReader):
    """The CSV reader (header in the first row), granted the input prefix only."""

    def __init__(self, *, bucket: s3.IBucket, prefix: str, key: str) -> None:
        super().__init__(bucket=bucket, key=key, csv_headers=sfn.CsvHeaders.use_first_row())
        self._grant = iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{prefix}*")]
        )

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [self._grant]


class _WriteResults(sfn.ResultWriterV2):
    """The Map run's results under the output prefix only (CDK's own grant is the whole bucket).

    The actions are the ones Step Functions documents for ResultWriter (it writes with multipart
    uploads and reads back what it wrote).
    """

    def __init__(self, *, bucket: s3.IBucket, prefix: str) -> None:
        super().__init__(
            bucket=bucket, prefix=sfn.JsonPath.format("{}results", sfn.JsonPath.string_at("$.output.prefix"))
        )
        self._grant = iam.PolicyStatement(
            actions=[
                "s3:PutObject",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:AbortMultipartUpload",
            ],
            resources=[bucket.arn_for_objects(f"{prefix}*")],
        )

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [self._grant]


class BatchEmbeddings(Construct):
    """The bulk embedding part. Exposes ``bucket``, ``function``, ``state_machine`` and their log groups."""

    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, images_dir: Path) -> None:
        super().__init__(scope, construct_id)
        settings = config.batch
        self.input_prefix = settings.input_prefix
        self.output_prefix = settings.output_prefix
        self.bucket = self._bucket(config)
        self.function_log_group = make_log_group(
            self, "FunctionLogs", retention_days=config.log_retention_days
        )
        self.function = self._batch_function(config, images_dir)
        self.state_machine_log_group = make_log_group(
            self, "StateMachineLogs", retention_days=config.log_retention_days
        )
        self.state_machine = self._state_machine(config)
        self._outputs()

    # ------------------------------------------------------------------ storage

    def _bucket(self, config: AppConfig) -> s3.IBucket:
        name = config.batch.bucket_name
        if name is not None:
            return s3.Bucket.from_bucket_name(self, "Bucket", name)
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(config.log_retention_days))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        Validations.of(access_logs).acknowledge(
            Acknowledgment(
                id="AwsSolutions-S1",
                reason=(
                    "This bucket is the destination of the data bucket's server access logs; logging its own "
                    "access into itself would log every log delivery. Its objects expire after "
                    "log_retention_days."
                ),
            )
        )
        return s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="bulk-embeddings/",
            # Inputs and vectors are the user's data: `cdk destroy` keeps the bucket.
            removal_policy=RemovalPolicy.RETAIN,
        )

    # ------------------------------------------------------------------ the batch function

    def _batch_function(self, config: AppConfig, images_dir: Path) -> lambda_.DockerImageFunction:
        settings = config.batch
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Batch embedding function: writes its log group and the output prefix, reads nothing",
        )
        allow_writing_log_group(role, self.function_log_group)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListOutputPrefix",
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{settings.output_prefix}*"]}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOutputPrefix",
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects(f"{settings.output_prefix}*")],
            )
        )
        Validations.of(role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{self._bucket_arn_token()}/{settings.output_prefix}*]",
                reason=(
                    "The batch function writes one object per batch under the output prefix, with keys made "
                    "at run time from the run and the batch; the grant is that prefix, nothing else."
                ),
            )
        )
        environment = {
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_LOG_LEVEL": config.log_level,
            "BATCH_OUTPUT_BUCKET": self.bucket.bucket_name,
            "BATCH_OUTPUT_PREFIX": settings.output_prefix,
        }
        function = lambda_.DockerImageFunction(
            self,
            "Function",
            description=f"Bulk embeddings with {config.embeddings_model.source}: Map batches to Parquet"[
                :256
            ],
            code=image_code(
                images_dir=images_dir,
                folder="embeddings",
                build_args=config.embeddings_model.build_args(),
                platform=config.embeddings.platform,
                model_local_path=config.embeddings_model.local_path,
                hf_token_file=config.hf_token_file,
            ),
            architecture=LAMBDA_ARCHITECTURES[config.embeddings.architecture],
            memory_size=settings.memory_mb,
            timeout=Duration.seconds(settings.timeout_s),
            ephemeral_storage_size=Size.mebibytes(512),
            role=role,
            log_group=self.function_log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel[config.lambda_log_level],
            tracing=lambda_.Tracing.ACTIVE if config.tracing_enabled else None,
            environment=environment,
        )
        cfn_function: Any = function.node.default_child
        # The same image as the online function; only the command differs.
        cfn_function.add_property_override("ImageConfig.Command", BATCH_COMMAND)
        if config.tracing_enabled:
            acknowledge_tracing_grant(role)
        return function

    def _bucket_arn_token(self) -> str:
        """How cdk-nag names the bucket's ARN in a finding: the bucket's logical id + .Arn, or its ARN."""
        cfn_bucket = self.bucket.node.default_child
        if isinstance(cfn_bucket, s3.CfnBucket):
            return f"<{Stack.of(self).get_logical_id(cfn_bucket)}.Arn>"
        return f"arn:<AWS::Partition>:s3:::{self.bucket.bucket_name}"

    # ------------------------------------------------------------------ the state machine

    def _embed_batch(self, suffix: str) -> tasks.LambdaInvoke:
        """One child workflow: invoke the batch function with the batch, its result is the output."""
        task = tasks.LambdaInvoke(
            self,
            f"EmbedBatch{suffix}",
            lambda_function=self.function,
            payload=sfn.TaskInput.from_json_path_at("$"),
            output_path="$.Payload",
            retry_on_service_exceptions=False,
        )
        task.add_retry(errors=list(NOT_RETRIED), max_attempts=0)
        task.add_retry(errors=[RESUMED], interval=Duration.seconds(1), max_attempts=20, backoff_rate=1)
        task.add_retry(
            errors=list(TRANSIENT),
            interval=Duration.seconds(2),
            max_attempts=8,
            backoff_rate=2,
            max_delay=Duration.seconds(60),
            jitter_strategy=sfn.JitterType.FULL,
        )
        task.add_retry(errors=["States.ALL"], interval=Duration.seconds(5), max_attempts=2, backoff_rate=2)
        return task

    def _map(self, config: AppConfig, fmt: str) -> sfn.DistributedMap:
        settings = config.batch
        key = sfn.JsonPath.string_at("$.input.key")
        reader: sfn.IItemReader = (
            _ReadInputPrefix(bucket=self.bucket, prefix=settings.input_prefix, key=key)
            if fmt == "jsonl"
            else _ReadInputPrefixCsv(bucket=self.bucket, prefix=settings.input_prefix, key=key)
        )
        suffix = fmt.capitalize()
        embed = sfn.DistributedMap(
            self,
            f"Embed{suffix}",
            item_reader=reader,
            item_selector={
                "index": sfn.JsonPath.number_at("$$.Map.Item.Index"),
                "value": sfn.JsonPath.object_at("$$.Map.Item.Value"),
            },
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=settings.items_per_batch,
                max_input_bytes_per_batch=settings.bytes_per_batch,
                # ItemBatcher passes BatchInput as written: JSONPath fields spelled out with ".$".
                batch_input={
                    "output": {"bucket": self.bucket.bucket_name, "prefix.$": "$.output.prefix"},
                    "options.$": "$.options",
                    "source": {"bucket": self.bucket.bucket_name, "key.$": "$.input.key"},
                },
            ),
            max_concurrency=settings.max_concurrency,
            tolerated_failure_percentage=settings.tolerated_failure_percentage,
            result_writer_v2=_WriteResults(bucket=self.bucket, prefix=settings.output_prefix),
            label=MAP_LABEL,
            map_execution_type=sfn.StateMachineType.STANDARD,
        )
        embed.item_processor(self._embed_batch(suffix))
        return embed

    def _state_machine(self, config: AppConfig) -> sfn.StateMachine:
        settings = config.batch
        refuse = sfn.Fail(
            self,
            "RefuseRun",
            error="InvalidRunInput",
            cause=(
                f"a run needs format 'jsonl' or 'csv', input.key under {settings.input_prefix}, "
                f"output.prefix under {settings.output_prefix} and ending in '/', and an options object "
                "(python -m client embed-s3 writes such an input)"
            ),
        )
        done = sfn.Succeed(self, "Done")

        def accepted(fmt: str) -> sfn.Condition:
            return sfn.Condition.and_(
                sfn.Condition.string_equals("$.format", fmt),
                sfn.Condition.is_present("$.options"),
                sfn.Condition.string_matches("$.input.key", _wildcard_pattern(settings.input_prefix)),
                sfn.Condition.string_matches(
                    "$.output.prefix", _wildcard_pattern(settings.output_prefix) + "/"
                ),
            )

        check = sfn.Choice(self, "CheckRun")
        for fmt in FORMATS:
            check.when(accepted(fmt), self._map(config, fmt).next(done))
        check.otherwise(refuse)

        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(check),
            comment="Embeds a JSON Lines or CSV object from S3 into Parquet vectors (docs/batch.md)",
            logs=sfn.LogOptions(
                destination=self.state_machine_log_group,
                level=sfn.LogLevel.ALL,
                # Records' texts never go to the logs: only event types, states and errors.
                include_execution_data=False,
            ),
            tracing_enabled=config.tracing_enabled,
        )
        self._acknowledge_state_machine(state_machine, config)
        return state_machine

    def _acknowledge_state_machine(self, state_machine: sfn.StateMachine, config: AppConfig) -> None:
        """The cdk-nag findings the state machine keeps, each with its reason."""
        settings = config.batch
        stack = Stack.of(self)
        bucket = self._bucket_arn_token()
        function = stack.get_logical_id(self.function.node.default_child)  # type: ignore[arg-type]
        machine = stack.get_logical_id(state_machine.node.default_child)  # type: ignore[arg-type]
        executions = (
            "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
            f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{machine}"}}]}}]}}'
        )
        findings = {
            f"Resource::{bucket}/{settings.input_prefix}*": (
                "The Distributed Map reads the run's input object, named at run time, under the input "
                "prefix; the grant is GetObject on that prefix only."
            ),
            f"Resource::{bucket}/{settings.output_prefix}*": (
                "ResultWriter writes the Map run's results (manifest and result files, named by Step "
                "Functions at run time) under the output prefix only."
            ),
            "Resource::*": (
                "Step Functions' log delivery to CloudWatch Logs (logs:CreateLogDelivery and the related "
                "actions) and X-Ray have no resource-level permissions: AWS documents '*' for them."
            ),
            f"Resource::<{function}.Arn>:*": (
                "CDK's LambdaInvoke grants the batch function and its versions (ARN:*), so a qualified "
                "invoke works too; it is the one function, nothing else."
            ),
        }
        for finding, reason in findings.items():
            Validations.of(state_machine.role).acknowledge(
                Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason)
            )
        for execution in (f"{executions}:*", f"{executions}/{MAP_LABEL}:*"):
            Validations.of(state_machine).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::{execution}]",
                    reason=(
                        "CDK's Distributed Map policy: the state machine describes, stops and redrives its "
                        "own executions and the Map run's child executions, whose names Step Functions makes."
                    ),
                )
            )
        if not config.tracing_enabled:
            Validations.of(state_machine).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-SF2",
                    reason=(
                        "X-Ray follows the stack-wide tracing_enabled switch (off by default: X-Ray bills "
                        "per trace, and a run traces every child workflow). Every execution event is logged "
                        "to the state machine's log group instead."
                    ),
                )
            )

    # ------------------------------------------------------------------ outputs

    def _outputs(self) -> None:
        values = {
            "bucket": (self.bucket.bucket_name, "Bucket of the bulk embedding inputs and outputs"),
            "state_machine": (
                self.state_machine.state_machine_arn,
                "State machine that runs a bulk embedding",
            ),
            "function": (
                self.function.function_name,
                "Batch embedding function (its REPORT logs price a run)",
            ),
            "input_prefix": (self.input_prefix, "Prefix the state machine may read input objects from"),
            "output_prefix": (self.output_prefix, "Prefix the vectors, errors and Map run results go to"),
        }
        for name, (value, description) in values.items():
            output = CfnOutput(self, OUTPUT_KEYS[name], value=value, description=description)
            output.override_logical_id(OUTPUT_KEYS[name])
