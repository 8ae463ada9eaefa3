"""One batch's vectors as a Parquet file: ``id`` (string) and ``vector`` (fixed-size list of float32).

That is the layout vector stores ingest without conversion: LanceDB wants the
vector column as an Arrow ``FixedSizeList<float32, dim>`` (a variable-size
list must be cast first), and pyarrow keeps that type through Parquet (Parquet
itself stores a list; the Arrow schema saved in the file restores the fixed
size on read). DuckDB, pandas and Spark read the same file as a list of
floats, which pgvector and OpenSearch take.

The file's key-value metadata records how the vectors were made (model,
dimensions, prompt, normalisation, truncation) and which items of which batch
it holds, so a file found later says where it came from.

This module imports pyarrow (about 170 MB on disk, 0.2-0.3 s to import), so
only the batch entry point imports it: the online function never does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

ID_COLUMN = "id"
VECTOR_COLUMN = "vector"
METADATA_PREFIX = "embeddings."


def schema(dimensions: int, metadata: Mapping[str, str] | None = None) -> pa.Schema:
    return pa.schema(
        [
            pa.field(ID_COLUMN, pa.string(), nullable=False),
            pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dimensions), nullable=False),
        ],
        metadata={METADATA_PREFIX + key: value for key, value in (metadata or {}).items()},
    )


def to_parquet(
    ids: Sequence[str],
    vectors: npt.NDArray[np.float32],
    *,
    dimensions: int,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The Parquet bytes of one batch (zero rows is a valid file: it marks the batch as done)."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
    if len(ids) and vectors.shape[1] != dimensions:
        raise ValueError(f"vectors have {vectors.shape[1]} dimensions, the file declares {dimensions}")
    column = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dimensions)
    table = pa.Table.from_arrays(
        [pa.array(list(ids), type=pa.string()), column], schema=schema(dimensions, metadata)
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``embeddings.*`` key-value metadata of a file ``to_parquet`` wrote, without the prefix."""
    raw = pq.read_schema(pa.BufferReader(data)).metadata or {}
    return {
        key.decode()[len(METADATA_PREFIX) :]: value.decode()
        for key, value in raw.items()
        if key.decode().startswith(METADATA_PREFIX)
    }
