"""The single pass: SAE codes → streaming top-k, interval and random samples, histograms, density, co-activation."""

from atlas.harvest.grid import SALT_INTERVAL, SALT_RANDOM, sample_key
from atlas.harvest.harvester import Harvester
from atlas.harvest.partials import HarvestPartial
from atlas.harvest.result import HarvestResult

__all__ = ["Harvester", "HarvestPartial", "HarvestResult", "sample_key", "SALT_INTERVAL", "SALT_RANDOM"]
