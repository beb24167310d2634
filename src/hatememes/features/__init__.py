"""Feature extractors (DESIGN §5), by name: `clip` (open_clip), `grid` (CNN map), `regions` (RoIAlign on the CNN
map, or MMF's precomputed region features read from files)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hatememes.features.clip import ClipExtractor, ClipParams
from hatememes.features.grid import GridExtractor, GridParams
from hatememes.features.mmf_regions import PrecomputedRegions
from hatememes.features.regions import RegionsExtractor, RegionsParams


@dataclass(frozen=True)
class FeaturesParams:
    kinds: tuple[str, ...] = ("clip", "grid", "regions")  # the features@ stages dvc.yaml runs (`foreach`)
    batch_size: int = 64
    num_workers: int = 2
    clip: ClipParams = field(default_factory=ClipParams)
    grid: GridParams = field(default_factory=GridParams)
    regions: RegionsParams = field(default_factory=RegionsParams)


def build_regions(params: RegionsParams) -> RegionsExtractor | PrecomputedRegions:
    """MMF's files when `precomputed_dir` is set (no CNN is loaded), else RoIAlign on the CNN (detector or grid)."""
    return PrecomputedRegions(params) if params.source == "precomputed" else RegionsExtractor(params)


EXTRACTORS = {"clip": ClipExtractor, "grid": GridExtractor, "regions": build_regions}


def build_extractor(name: str, params: FeaturesParams):
    if name not in EXTRACTORS:
        raise KeyError(f"unknown extractor {name!r}; valid extractors: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](getattr(params, name))
