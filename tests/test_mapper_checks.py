"""The pretraining mappers refuse sizes and counts that cannot work when they are built (start-up), naming the
config key, instead of an OpenCV / numpy error in a data-loader worker at the first sample."""
import pytest

from siamese_detr.data.detreg_mapper import DETRegMapper
from siamese_detr.data.proposals import RandomProposals
from siamese_detr.data.siamese_mapper import SiameseViewMapper
from siamese_detr.data.up_detr_mapper import UPDETRMapper
from siamese_detr.utils.user_errors import UserValueError


def _siamese(**kwargs):
    return SiameseViewMapper(proposal_source=RandomProposals(num_boxes=8), **kwargs)


def _detreg(**kwargs):
    return DETRegMapper(proposal_source=RandomProposals(num_boxes=8), **kwargs)


@pytest.mark.parametrize("build, key, value, expected", [
    (_siamese, "crop_size", 0, "SiameseViewMapper: dataloader.train.mapper.crop_size (the side of the region "
                               "crops, in pixels) must be at least 1, got 0"),
    (_siamese, "crop_size", -8, "must be at least 1, got -8"),
    (_siamese, "crop_size", 2.5, "crop_size (the side of the region crops, in pixels) must be a whole number, "
                                 "got 2.5"),
    (_siamese, "max_size", 0, "dataloader.train.mapper.max_size (the longest side allowed, in pixels) must be at "
                              "least 1, got 0"),
    (_siamese, "short_side_range", (200, 100), "dataloader.train.mapper.short_side_range (the short side of the "
                                               "resized image, in pixels, drawn in it) must be [low, high] with 1 "
                                               "<= low <= high, got [200, 100]"),
    (_siamese, "short_side_range", (0, 0), "with 1 <= low <= high, got [0, 0]"),
    (_siamese, "short_side_range", (320,), "must be [low, high], got [320]"),
    (UPDETRMapper, "patch_size", 0, "UPDETRMapper: dataloader.train.mapper.patch_size (the side the patches are "
                                    "resized to, in pixels) must be at least 1, got 0"),
    (UPDETRMapper, "min_patch_size", -4, "UPDETRMapper: dataloader.train.mapper.min_patch_size (the smallest side "
                                         "of a cut patch, in pixels) must be at least 1, got -4"),
    (_detreg, "crop_size", 0, "DETRegMapper: dataloader.train.mapper.crop_size (the side of the box crops, in "
                              "pixels) must be at least 1, got 0"),
    (_detreg, "num_proposals", 0, "DETRegMapper: dataloader.train.mapper.num_proposals (K, the proposals each "
                                  "image keeps) must be at least 1, got 0"),
])
def test_a_size_or_count_that_cannot_work_is_refused_naming_its_key(build, key, value, expected):
    with pytest.raises(UserValueError) as e:
        build(**{key: value})
    assert expected in str(e.value)


def test_the_accepted_values_reach_the_mapper_as_given():
    """Whole numbers given as floats (a YAML / override ``128.0``) become the same ints; a one-value range
    (``low == high``) is allowed: both ends are drawn."""
    siamese = _siamese(crop_size=64.0, short_side_range=[300, 300], max_size=500)
    assert (siamese.crop_size, siamese.policy.short_side_range, siamese.policy.max_size) == (64, (300, 300), 500)
    assert all(type(v) is int for v in (siamese.crop_size, *siamese.policy.short_side_range, siamese.policy.max_size))
    up = UPDETRMapper(patch_size=32, min_patch_size=1)
    assert (up.patch_size, up.min_patch_size) == (32, 1)
    detreg = _detreg(crop_size=16, num_proposals=1, min_proposals=1)
    assert (detreg.crop_size, detreg.num_proposals) == (16, 1)
