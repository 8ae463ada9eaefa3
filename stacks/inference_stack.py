"""The one stack: the generator and the embeddings function, their URLs and (optionally) the API key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import (
    Acknowledgment,
    Aws,
    CfnOutput,
    CfnRule,
    CfnRuleAssertion,
    Fn,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.batch_embeddings import BatchEmbeddings
from stacks.config import AppConfig, FunctionConfig, UrlInvokeMode
from stacks.inference_function import InferenceFunction
from stacks.observability import Observability, ObservedFunction
from stacks.regions import (
    FUNCTION_URL_UNSUPPORTED_REGIONS,
    SNAPSTART_UNSUPPORTED_REGIONS,
    function_url_refusal,
    snapstart_refusal,
)

API_KEY_LENGTH = 48


class InferenceStack(Stack):
    """Two container-image Lambda functions with Function URLs, wired from an ``AppConfig``.

    In API-key mode the URLs have auth type NONE and both handlers demand
    ``Authorization: Bearer <key>``; the key is generated in Secrets Manager,
    each function gets only the secret's ARN and the right to read that one
    secret, and each is capped by a reserved concurrency (see
    ``AppConfig.reserved_concurrency``).

    The stack is environment-agnostic, so the regions that lack a part of it
    are refused by CloudFormation rules, before anything is created.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        images_dir: Path,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.images_dir = images_dir
        self._refuse_regions(config)

        api_key_mode = config.function_url_auth == "API_KEY"
        self.llama = self._function(
            "Llama",
            config,
            folder="llama",
            description=f"llama.cpp text generation with {config.llama_model.source}",
            settings=config.llama,
            url_invoke_mode=config.llama.url_invoke_mode,
            build_args=config.llama_model.build_args(),
            model_local_path=config.llama_model.local_path,
        )
        self.embeddings = self._function(
            "Embeddings",
            config,
            folder="embeddings",
            description=(
                f"Text embeddings with {config.embeddings_model.source} ({config.embeddings_model.backend})"
            ),
            settings=config.embeddings,
            url_invoke_mode=config.embeddings.url_invoke_mode,
            build_args=config.embeddings_model.build_args(),
            model_local_path=config.embeddings_model.local_path,
        )
        functions = {"Llama": self.llama, "Embeddings": self.embeddings}
        self.observability = Observability(
            self,
            "Observability",
            config=config,
            functions=[
                ObservedFunction(
                    key=part.service_name,
                    title=title,
                    function=part.function,
                    timeout_s=settings.timeout_s,
                    reserved_concurrency=config.reserved_concurrency(settings),
                    snap_start=settings.snap_start,
                    daily_token_budget=settings.daily_token_budget,
                    generates=part is self.llama,
                )
                for part, settings, title in (
                    (self.llama, config.llama, f"Generator ({config.llama_model.source})"),
                    (self.embeddings, config.embeddings, f"Embeddings ({config.embeddings_model.source})"),
                )
            ],
        )

        self.batch: BatchEmbeddings | None = None
        if config.batch.enabled:
            self.batch = BatchEmbeddings(self, "BatchEmbeddings", config=config, images_dir=images_dir)

        self.api_key: secretsmanager.Secret | None = None
        if api_key_mode:
            self.api_key = secretsmanager.Secret(
                self,
                "ApiKey",
                description="Bearer key for the inference Function URLs (auth type NONE)",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=API_KEY_LENGTH,
                    exclude_punctuation=True,
                    include_space=False,
                ),
                removal_policy=RemovalPolicy.DESTROY,
            )
            Validations.of(self.api_key).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-SMG4",
                    reason=(
                        "A static API key by design: clients hold a copy, so automatic rotation would break "
                        "callers. Rotate it by hand with `aws secretsmanager put-secret-value`; the handlers "
                        "read the new key within minutes (documented in docs/deploy.md)."
                    ),
                )
            )
            for part in functions.values():
                part.role.add_to_policy(
                    iam.PolicyStatement(
                        sid="ReadApiKey",
                        actions=["secretsmanager:GetSecretValue"],
                        resources=[self.api_key.secret_arn],
                    )
                )
                part.function.add_environment("API_KEY_SECRET_ARN", self.api_key.secret_arn)

        for name, part in functions.items():
            CfnOutput(
                self,
                f"{name}FunctionName",
                value=part.function.function_name,
                description=f"{name} function name",
            )
            CfnOutput(
                self,
                f"{name}FunctionArn",
                value=part.invoke_target.function_arn,
                description=(
                    f"{name} ARN to pass to `aws lambda invoke --function-name` "
                    "(the 'live' alias when SnapStart or provisioned concurrency is on)"
                ),
            )
            CfnOutput(self, f"{name}FunctionUrl", value=part.url.url, description=f"{name} Function URL")

        if self.api_key is not None:
            CfnOutput(
                self,
                "ApiKeySecretArn",
                value=self.api_key.secret_arn,
                description="Secrets Manager secret holding the Bearer key of both URLs",
            )
            CfnOutput(
                self,
                "ApiKeyCommand",
                value=Fn.join(
                    "",
                    [
                        "aws secretsmanager get-secret-value --secret-id ",
                        self.api_key.secret_arn,
                        " --region ",
                        self.region,
                        " --query SecretString --output text",
                    ],
                ),
                description="Prints the API key (the key itself is never an output)",
            )

    def _refuse_regions(self, config: AppConfig) -> None:
        """Rules that fail a deploy to a region without Function URLs (or SnapStart, when on).

        CloudFormation checks rules before it creates anything, and shows the assertion's
        description, which says what to do.
        """
        CfnRule(
            self,
            "FunctionUrlRegion",
            assertions=[
                CfnRuleAssertion(
                    assert_=Fn.condition_not(
                        Fn.condition_contains(list(FUNCTION_URL_UNSUPPORTED_REGIONS), Aws.REGION)
                    ),
                    assert_description=function_url_refusal(),
                )
            ],
        )
        snap_start_keys = [
            settings.key("snap_start")
            for settings in (config.llama, config.embeddings)
            if settings.snap_start
        ]
        if snap_start_keys:
            CfnRule(
                self,
                "SnapStartRegion",
                assertions=[
                    CfnRuleAssertion(
                        assert_=Fn.condition_not(
                            Fn.condition_contains(list(SNAPSTART_UNSUPPORTED_REGIONS), Aws.REGION)
                        ),
                        assert_description=snapstart_refusal(snap_start_keys),
                    )
                ],
            )

    def _function(
        self,
        construct_id: str,
        config: AppConfig,
        *,
        folder: str,
        description: str,
        settings: FunctionConfig,
        url_invoke_mode: UrlInvokeMode,
        build_args: Mapping[str, str],
        model_local_path: str | None,
    ) -> InferenceFunction:
        """One function, with the settings both share taken from ``config``."""
        return InferenceFunction(
            self,
            construct_id,
            folder=folder,
            description=description,
            settings=settings,
            reserved_concurrency=config.reserved_concurrency(settings),
            url_invoke_mode=url_invoke_mode,
            build_args=build_args,
            model_local_path=model_local_path,
            images_dir=self.images_dir,
            hf_token_file=config.hf_token_file,
            service_name=folder,
            log_level=config.log_level,
            lambda_log_level=config.lambda_log_level,
            log_retention_days=config.log_retention_days,
            url_auth_type=(
                lambda_.FunctionUrlAuthType.NONE
                if config.function_url_auth == "API_KEY"
                else lambda_.FunctionUrlAuthType.AWS_IAM
            ),
            cors_allowed_origins=config.cors_allowed_origins,
            metrics_namespace=config.namespace,
            metrics_enabled=config.metrics_enabled,
            tracing_enabled=config.tracing_enabled,
        )
