"""The batch job: one batch of a Map run's items in, its vectors in S3 as Parquet out.

The state machine (stacks/batch_embeddings.py) reads a JSON Lines or CSV
object from S3 with a Distributed Map, wraps every record with its position
(``{"index": n, "value": record}``), groups records into batches by count
and bytes, and invokes the batch function with::

    {"BatchInput": {"output": {"bucket": ..., "prefix": "output/<run>/"},
                    "options": {"id_field": "id", "text_field": "text", "prompt_name": ..., ...},
                    "source": {"bucket": ..., "key": ...}},
     "Items": [{"index": 0, "value": {...}}, ...]}

The job embeds the good records with the same ``EmbeddingService`` the online
routes use (same prompts, truncation and normalisation options), reports the
bad ones with their reason (in its result and in an errors object), and writes
one Parquet object per batch under a key made from the batch itself
(``<prefix>vectors/part-<first index>-<digest>-<start>-<end>.parquet``, start
and end being positions in the batch). So:

- a retried batch writes the same key again (an overwrite, not a duplicate);
- a re-run of the same input finds its keys already there and writes nothing;
- a batch the deadline cuts short writes the part it finished
  (``...-000000-000137.parquet``), fails with ``BatchNotFinished``, and the
  state machine's retry finds that part and embeds only the rest. Nothing is
  lost and nothing is embedded twice.

Every range of a batch gets its Parquet object even when all its records are
bad (zero rows), so "written" always means "done".
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedder.batch_parquet import to_parquet
from embedder.batch_records import BadRecord, Record, classify
from embedder.batch_s3 import ObjectStore
from embedder.service import EmbeddingService, EmbedOptions, ResponseShape
from lambda_common.deadline import Deadline
from lambda_common.errors import NotEnoughTime, RequestError

WRITE_MARGIN_MS = 5_000
"""Time kept free before the deadline for writing what was embedded (Parquet, S3 PUT)."""
CHUNK_RECORDS = 64
"""Records per call to the service: the granularity at which a deadline can cut a batch."""
MAX_REPORTED_BAD_RECORDS = 25
"""Bad records listed in the result (the state payload stays small); the errors object has all."""
MAX_ITEMS_PER_BATCH = 100_000
"""The key format's limit (six digits per position), far above what 256 KiB of items can hold."""
SHAPE = ResponseShape("base64", per_item=0, fixed=0)
"""Vectors go to Parquet, not to a response: the size check only guards against absurd batches."""

PART = re.compile(r"-(?P<start>\d{6})-(?P<end>\d{6})\.parquet$")

_Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputLocation(_Strict):
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    prefix: Annotated[str, Field(min_length=1, max_length=900, pattern=r"^[^/].*/$")]
    """The run's folder, ending in '/': vectors/ and errors/ go under it."""


class RunOptions(_Strict):
    """How the run embeds: the online API's options, plus where each record keeps its id and text."""

    id_field: _Name = "id"
    text_field: _Name = "text"
    prompt_name: str | None = None
    normalize: bool = True
    truncate: bool | None = None
    """None: the function's AUTO_TRUNCATE setting, as for an online request that does not say."""
    truncation_direction: Literal["Left", "Right"] = "Right"
    dimensions: Annotated[int | None, Field(ge=1)] = None


class SourceObject(_Strict):
    bucket: str
    key: str


class BatchInput(_Strict):
    output: OutputLocation
    options: RunOptions = RunOptions()
    source: SourceObject | None = None


class Item(_Strict):
    index: Annotated[int, Field(ge=0)]
    """The item's position in the input (the Map run's item index)."""
    value: Any = None


class BatchEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    batch_input: BatchInput = Field(alias="BatchInput")
    items: Annotated[list[Item], Field(alias="Items", min_length=1, max_length=MAX_ITEMS_PER_BATCH)]


class InvalidBatch(Exception):
    """The event or the run's options cannot work; retrying will not help (the state machine does not)."""


class BatchNotFinished(Exception):
    """Part of the batch is written; the rest needs another invocation (the state machine retries)."""


class TimeoutTooShort(Exception):
    """Not even one record fits in the time an invocation has: raise the batch function's timeout."""


@dataclass(frozen=True)
class Layout:
    """The keys of one batch under the run's prefix."""

    prefix: str
    stem: str
    """``part-<first item index>-<digest of count, first and last item>``."""

    @classmethod
    def of(cls, prefix: str, items: Sequence[Item]) -> Layout:
        digest = hashlib.sha256(
            json.dumps(
                [len(items), items[0].model_dump(), items[-1].model_dump()],
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=True,
            ).encode("ascii")
        ).hexdigest()[:12]
        return cls(prefix=prefix, stem=f"part-{items[0].index:012d}-{digest}")

    @property
    def vectors_prefix(self) -> str:
        return f"{self.prefix}vectors/{self.stem}-"

    def vectors(self, start: int, end: int) -> str:
        return f"{self.vectors_prefix}{start:06d}-{end:06d}.parquet"

    def errors(self, start: int, end: int) -> str:
        return f"{self.prefix}errors/{self.stem}-{start:06d}-{end:06d}.json"

    def covered(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        """The ranges of this batch that objects already hold."""
        ranges = []
        for key in keys:
            if key.startswith(self.vectors_prefix) and (match := PART.search(key)):
                ranges.append((int(match["start"]), int(match["end"])))
        return sorted(ranges)


def missing_ranges(count: int, covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The positions in ``[0, count)`` no covered range holds, as ranges."""
    gaps = []
    cursor = 0
    for start, end in sorted(covered):
        if start > cursor:
            gaps.append((cursor, min(start, count)))
        cursor = max(cursor, end)
    if cursor < count:
        gaps.append((cursor, count))
    return [(start, end) for start, end in gaps if start < end]


@dataclass
class BatchResult:
    """What one invocation did; the state machine keeps it as the batch's output (ResultWriter)."""

    batch: str
    items: int
    embedded: int = 0
    tokens: int = 0
    already_written: int = 0
    bad_records: list[BadRecord] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self, bucket: str, to_item: Sequence[Item]) -> dict[str, Any]:
        listed = [
            {"item": to_item[bad.index].index, "id": bad.id, "reason": bad.reason}
            for bad in self.bad_records[:MAX_REPORTED_BAD_RECORDS]
        ]
        return {
            "batch": self.batch,
            "items": self.items,
            "embedded": self.embedded,
            "tokens": self.tokens,
            "already_written": self.already_written,
            "bad_records": len(self.bad_records),
            "bad_records_listed": listed,
            "written": [f"s3://{bucket}/{key}" for key in self.written],
            "seconds": round(self.seconds, 3),
        }


class BatchJob:
    """Embeds batches with one EmbeddingService and writes them to one allowed output location."""

    def __init__(
        self,
        service: EmbeddingService,
        store: ObjectStore,
        *,
        output_bucket: str,
        output_prefix: str,
    ) -> None:
        self.service = service
        self.store = store
        self.output_bucket = output_bucket
        self.output_prefix = output_prefix

    # ------------------------------------------------------------------ checks

    def parse(self, event: Any) -> BatchEvent:
        try:
            parsed = BatchEvent.model_validate(event)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors(include_url=False)[:5]
            )
            raise InvalidBatch(f"not a batch of the embedding state machine: {problems}") from None
        output = parsed.batch_input.output
        if output.bucket != self.output_bucket or not output.prefix.startswith(self.output_prefix):
            raise InvalidBatch(
                f"this function writes only under s3://{self.output_bucket}/{self.output_prefix}; the run "
                f"asks for s3://{output.bucket}/{output.prefix}"
            )
        return parsed

    def embed_options(self, options: RunOptions) -> EmbedOptions:
        """The run's options as the service takes them, checked before any work."""
        service = self.service
        try:
            service.prompt(options.prompt_name)
            service.output_dimensions(options.dimensions)
        except RequestError as exc:
            raise InvalidBatch(f"the run's options cannot work: {exc.message}") from None
        return EmbedOptions(
            normalize=options.normalize,
            truncate=service.settings.auto_truncate if options.truncate is None else options.truncate,
            truncation_direction=options.truncation_direction,
            prompt_name=options.prompt_name,
            dimensions=options.dimensions,
        )

    def _too_long(self, records: list[Record], options: EmbedOptions) -> tuple[list[Record], list[BadRecord]]:
        """Without truncation, records over the model's token limit are bad records, not batch failures."""
        if options.truncate or not records:
            return records, []
        tokenizer = self.service.backend.tokenizer
        prompt = self.service.prompt(options.prompt_name)
        lengths = [len(encoding.ids) for encoding in tokenizer.encode([r.text for r in records], prompt)]
        keep: list[Record] = []
        bad: list[BadRecord] = []
        for record, length in zip(records, lengths, strict=True):
            if length > tokenizer.max_length:
                bad.append(
                    BadRecord(
                        record.index,
                        record.id,
                        f"{length} tokens{' with the prompt' if prompt else ''}; this model takes at most "
                        f"{tokenizer.max_length}: shorten it or run with truncate",
                    )
                )
            else:
                keep.append(record)
        return keep, bad

    # ------------------------------------------------------------------ the work

    def run(self, event: Any, deadline: Deadline) -> dict[str, Any]:
        started = time.perf_counter()
        parsed = self.parse(event)
        run = parsed.batch_input
        items = parsed.items
        options = self.embed_options(run.options)
        good, bad = classify(
            [item.value for item in items],
            id_field=run.options.id_field,
            text_field=run.options.text_field,
            max_chars=self.service.settings.max_input_chars,
        )
        good, too_long = self._too_long(good, options)
        bad = sorted(bad + too_long, key=lambda record: record.index)

        layout = Layout.of(run.output.prefix, items)
        covered = layout.covered(self.store.keys(run.output.bucket, layout.vectors_prefix))
        result = BatchResult(batch=layout.stem, items=len(items), bad_records=bad)
        result.already_written = sum(end - start for start, end in covered)
        for start, end in missing_ranges(len(items), covered):
            self._range(run, layout, items, options, good, bad, start, end, deadline, result)
        result.seconds = time.perf_counter() - started
        return result.as_json(run.output.bucket, items)

    def _range(
        self,
        run: BatchInput,
        layout: Layout,
        items: Sequence[Item],
        options: EmbedOptions,
        good: Sequence[Record],
        bad: Sequence[BadRecord],
        start: int,
        end: int,
        deadline: Deadline,
        result: BatchResult,
    ) -> None:
        """Embed and write positions ``[start, end)`` of the batch, or the part of them that fits."""
        pending = [record for record in good if start <= record.index < end]
        ids: list[str] = []
        vectors: list[npt.NDArray[np.float32]] = []
        chunk = CHUNK_RECORDS
        while pending:
            take = pending[:chunk]
            try:
                embedded = self.service.embed([r.text for r in take], options, SHAPE, deadline)
            except NotEnoughTime:
                if ids:  # write what is done, leave the rest to the state machine's retry
                    cut = take[0].index
                    self._write(run, layout, items, options, bad, start, cut, ids, vectors, result)
                    raise BatchNotFinished(
                        f"the invocation's deadline came: positions {start}-{cut - 1} of batch {layout.stem} "
                        f"are written, {len(pending)} records remain for the next try"
                    ) from None
                if chunk > 1:
                    chunk = max(1, chunk // 4)
                    continue
                if result.written:
                    raise BatchNotFinished(
                        f"the invocation's deadline came after {len(result.written)} objects of batch "
                        f"{layout.stem}; {len(pending)} records remain for the next try"
                    ) from None
                raise TimeoutTooShort(
                    "not one record can be embedded in the time an invocation has left: raise the batch "
                    "function's timeout (batch_embeddings_timeout_s)"
                ) from None
            ids.extend(r.id for r in take)
            vectors.append(embedded.vectors)
            result.embedded += len(take)
            result.tokens += embedded.tokens
            pending = pending[len(take) :]
            chunk = CHUNK_RECORDS
        self._write(run, layout, items, options, bad, start, end, ids, vectors, result)

    def _write(
        self,
        run: BatchInput,
        layout: Layout,
        items: Sequence[Item],
        options: EmbedOptions,
        bad: Sequence[BadRecord],
        start: int,
        end: int,
        ids: list[str],
        vectors: list[npt.NDArray[np.float32]],
        result: BatchResult,
    ) -> None:
        """The errors object of ``[start, end)`` (when it has bad records), then its Parquet object."""
        bucket = run.output.bucket
        dimensions = self.service.output_dimensions(options.dimensions)
        errors = [record for record in bad if start <= record.index < end]
        if errors:
            key = layout.errors(start, end)
            document = {
                "batch": layout.stem,
                "source": run.source.model_dump() if run.source else None,
                "errors": [
                    {"item": items[record.index].index, "id": record.id, "reason": record.reason}
                    for record in errors
                ],
            }
            self.store.put(bucket, key, json.dumps(document, indent=1).encode(), "application/json")
            result.written.append(key)
        stacked = np.concatenate(vectors) if vectors else np.zeros((0, dimensions), dtype=np.float32)
        prompt_name = options.prompt_name or self.service.prompts.default_name or ""
        metadata = {
            "model_id": self.service.model_id,
            "dimensions": str(dimensions),
            "normalize": json.dumps(options.normalize),
            "truncate": json.dumps(options.truncate),
            "truncation_direction": options.truncation_direction,
            "prompt_name": prompt_name,
            "prompt": self.service.prompt(options.prompt_name),
            "source": f"s3://{run.source.bucket}/{run.source.key}" if run.source else "",
            "first_item": str(items[start].index),
            "last_item": str(items[end - 1].index),
        }
        key = layout.vectors(start, end)
        body = to_parquet(ids, stacked, dimensions=dimensions, metadata=metadata)
        self.store.put(bucket, key, body, "application/vnd.apache.parquet")
        result.written.append(key)
