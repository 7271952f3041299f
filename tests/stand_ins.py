"""Models standing in for ones no test machine has: SAM with real weights."""

from __future__ import annotations

from serving.models.sam import Segmenter
from serving.models.subject import SubjectFinder

SAM_NAME = "sam-vit_b"


def finder_with_real_sam() -> tuple[SubjectFinder, Segmenter]:
    """The automatic subject (the real U²-Netp) with a SAM that counts as having real weights, so clicks on the
    automatic subject go to it: a tiny, seeded SAM named like ViT-B stands in. Returns the finder and that SAM."""
    from serving.models.profiles import ResolvedProfile
    from serving.models.salient import SalientDetector
    from serving.models.salient_weights import find_salient
    from serving.models.sam_builders import build_tiny_sam
    from serving.settings import Settings

    sam = Segmenter(build_tiny_sam(seed=0), model_name=SAM_NAME)
    salient = find_salient(Settings())
    detector = SalientDetector.load(salient)
    finder = SubjectFinder(
        detector, lambda: sam, salient=salient, sam_profile=ResolvedProfile("real"), sam_name=SAM_NAME
    )
    return finder, sam
