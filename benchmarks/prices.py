"""The price book: ``benchmarks/prices.json``, read and checked once into a ``PriceBook``.

Every price the cost model uses lives in that one dated file, with its
source; this module holds none. Amounts are strings in the file and exact
``Decimal`` values here. A region, architecture or SnapStart price the file
does not have is a ``CostInputError`` that names it, never a default.

Standard library only: the client package and the benchmarks both load it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

PRICES_PATH = Path(__file__).with_name("prices.json")
ARCHITECTURES = ("x86_64", "arm64")
DEFAULT_REGION = "us-east-1"
ARCHITECTURE_ALIASES = {
    "x86": "x86_64",
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "arm": "arm64",
    "arm64": "arm64",
}
MB_PER_GB = Decimal(1024)
"""AWS's pricing examples count 1,024 MB to the GB."""
MS_PER_S = Decimal(1000)
MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)


class CostInputError(ValueError):
    """A workload or price look-up that cannot be priced; the message says why."""


@dataclass(frozen=True)
class LambdaRate:
    """Lambda's prices for one region and architecture."""

    region: str
    architecture: str
    gb_second_tiers: tuple[tuple[Decimal | None, Decimal], ...]
    """(upper bound of the tier in monthly GB-seconds or None for the last, price per GB-second)."""
    request: Decimal
    ephemeral_gb_second: Decimal

    @property
    def gb_second(self) -> Decimal:
        """The first-tier price, which is what nearly every account pays."""
        return self.gb_second_tiers[0][1]


@dataclass(frozen=True)
class SnapStartRate:
    """SnapStart's two charges in one region (the same for both architectures)."""

    region: str
    cache_gb_second: Decimal
    """Per GB-second of configured memory while a published version is active."""
    restore_gb: Decimal
    """Per GB of configured memory, each time an environment is restored from the snapshot."""


@dataclass(frozen=True)
class SnapStartPrices:
    """The SnapStart part of the price book: rates where found, and why the others are missing."""

    checked: str
    source: str
    regional_source: str
    applies_to: str
    billing: str
    architectures: str
    minimum_cache_hours: Decimal
    hours_per_month: Decimal
    rates: dict[str, SnapStartRate]
    not_found: dict[str, str]
    """Region -> why prices.json has no SnapStart price for it."""


@dataclass(frozen=True)
class ManagedOffer:
    """A managed per-token alternative to self-hosting the model."""

    id: str
    name: str
    kind: str
    input_per_million: Decimal
    output_per_million: Decimal
    region: str
    source: str
    note: str


@dataclass(frozen=True)
class FreeTier:
    requests: int
    gb_seconds: Decimal


@dataclass(frozen=True)
class BatchRunPrices:
    """What a bulk-embedding run costs besides Lambda, in one region."""

    state_transition: Decimal
    """A Step Functions Standard state transition."""
    s3_request: Decimal
    """An S3 PUT, COPY, POST or LIST request."""


@dataclass(frozen=True)
class PriceBook:
    """Everything in prices.json, validated."""

    checked: str
    source: str
    regional_source: str
    memory_mb_range: tuple[int, int]
    ephemeral_mb_range: tuple[int, int]
    ephemeral_included_mb: int
    free_tier: FreeTier
    rates: dict[tuple[str, str], LambdaRate]
    region_names: dict[str, str]
    managed: tuple[ManagedOffer, ...]
    snapstart: SnapStartPrices
    batch_runs: dict[str, BatchRunPrices]
    """Step Functions and S3 prices by region (only where prices.json has both)."""

    @property
    def regions(self) -> list[str]:
        return sorted(self.region_names)

    def rate(self, region: str, architecture: str) -> LambdaRate:
        arch = normalise_architecture(architecture)
        if region not in self.region_names:
            raise CostInputError(
                f"unknown region {region!r}: prices.json has {', '.join(self.regions)} "
                "(add the region's rates to benchmarks/prices.json)"
            )
        return self.rates[(region, arch)]

    def snapstart_rate(self, region: str, architecture: str) -> SnapStartRate:
        """SnapStart's prices in ``region``, or an error that says the file has none there and why."""
        self.rate(region, architecture)  # the same checks of region and architecture
        found = self.snapstart.rates.get(region)
        if found is None:
            priced = ", ".join(sorted(self.snapstart.rates))
            raise CostInputError(
                f"prices.json has no SnapStart price for {region}: {self.snapstart.not_found[region]} "
                f"(SnapStart is priced for {priced})"
            )
        return found

    def managed_for(self, kind: str) -> list[ManagedOffer]:
        return [offer for offer in self.managed if offer.kind == kind]


def normalise_architecture(name: str) -> str:
    try:
        return ARCHITECTURE_ALIASES[name.lower()]
    except KeyError:
        raise CostInputError(f"unknown architecture {name!r}: use x86_64 or arm64") from None


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, (str, int)):
        raise CostInputError(f"{where}: price must be a string or integer, got {value!r}")
    return Decimal(str(value))


def _snapstart(entry: dict[str, Any], regions: list[str], path: Path) -> SnapStartPrices:
    """The SnapStart block: every region of the book either priced or marked not found, with why."""
    rates: dict[str, SnapStartRate] = {}
    not_found: dict[str, str] = {}
    for region, prices in entry["regions"].items():
        if "not_found" in prices:
            not_found[region] = str(prices["not_found"])
        else:
            rates[region] = SnapStartRate(
                region=region,
                cache_gb_second=_decimal(prices["cache_gb_second"], f"snapstart/{region}/cache_gb_second"),
                restore_gb=_decimal(prices["restore_gb"], f"snapstart/{region}/restore_gb"),
            )
    unaccounted = sorted(set(regions) - set(rates) - set(not_found))
    if unaccounted:
        raise CostInputError(
            f"{path}: lambda.snapstart.regions says nothing about {', '.join(unaccounted)}: give its prices "
            "or a not_found reason"
        )
    return SnapStartPrices(
        checked=entry["checked"],
        source=entry["source"],
        regional_source=entry["regional_source"],
        applies_to=entry["applies_to"],
        billing=entry["billing"],
        architectures=entry["architectures"],
        minimum_cache_hours=Decimal(entry["minimum_cache_hours"]),
        hours_per_month=Decimal(entry["hours_per_month"]),
        rates=rates,
        not_found=not_found,
    )


def load_prices(path: Path = PRICES_PATH) -> PriceBook:
    """Read and check the price file (every price, bound and source in one place)."""
    data = json.loads(path.read_text())
    lam = data["lambda"]
    bounds = lam["duration_tiers"]
    rates: dict[tuple[str, str], LambdaRate] = {}
    names: dict[str, str] = {}
    for region, entry in lam["regions"].items():
        names[region] = entry["name"]
        for arch in ARCHITECTURES:
            raw = entry[arch]
            prices = [_decimal(p, f"{region}/{arch}/gb_second") for p in raw["gb_second"]]
            limits: list[Decimal | None] = [Decimal(b) for b in bounds[arch]]
            limits.append(None)
            if len(prices) != len(limits):
                raise CostInputError(
                    f"{path}: {region}/{arch} has {len(prices)} GB-second prices for {len(limits)} tiers"
                )
            rates[(region, arch)] = LambdaRate(
                region=region,
                architecture=arch,
                gb_second_tiers=tuple(zip(limits, prices, strict=True)),
                request=_decimal(raw["request"], f"{region}/{arch}/request"),
                ephemeral_gb_second=_decimal(raw["ephemeral_gb_second"], f"{region}/{arch}/ephemeral"),
            )
    free = lam["free_tier"]
    managed = tuple(
        ManagedOffer(
            id=m["id"],
            name=m["name"],
            kind=m["kind"],
            input_per_million=_decimal(m["input_per_million"], m["id"]),
            output_per_million=_decimal(m["output_per_million"], m["id"]),
            region=m["region"],
            source=m["source"],
            note=m.get("note", ""),
        )
        for m in data["managed"]
    )
    return PriceBook(
        checked=data["checked"],
        source=lam["source"],
        regional_source=lam["regional_source"],
        memory_mb_range=(lam["memory_mb"]["min"], lam["memory_mb"]["max"]),
        ephemeral_mb_range=(lam["ephemeral_storage_mb"]["min"], lam["ephemeral_storage_mb"]["max"]),
        ephemeral_included_mb=lam["ephemeral_storage_mb"]["included"],
        free_tier=FreeTier(
            requests=free["requests_per_month"], gb_seconds=Decimal(free["gb_seconds_per_month"])
        ),
        rates=rates,
        region_names=names,
        managed=managed,
        snapstart=_snapstart(lam["snapstart"], sorted(names), path),
        batch_runs={
            region: BatchRunPrices(
                state_transition=_decimal(step["standard_state_transition"], f"stepfunctions/{region}"),
                s3_request=_decimal(
                    data["s3"]["regions"][region]["put_copy_post_list_request"], f"s3/{region}"
                ),
            )
            for region, step in data["stepfunctions"]["regions"].items()
            if region in data["s3"]["regions"]
        },
    )
