from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfx_transfer.data.augment import (
    POLICIES,
    TEST_TIME_VIEWS,
    augment_image,
    check_test_time_views,
    make_policy,
    symmetric_view,
)


def _asymmetric_image(size=32):
    """A bright block in the top-left corner only: any flip or quarter turn moves it."""
    image = np.zeros((size, size, 3), np.float32)
    image[2:10, 2:14] = 255.0
    return image


def _run(policy, image, label=0, seeds=range(40)):
    outputs = []
    for seed in seeds:
        augmented, new_label = augment_image(tf.constant(image), tf.constant(label), policy, tf.constant([seed, 7]))
        outputs.append((augmented.numpy(), int(new_label)))
    return outputs


def _mass_left(image):
    image = image - image.min()  # brightness shifts the whole image; only the block counts
    return image[:, : image.shape[1] // 2].sum() / max(image.sum(), 1e-9)


def _mass_top(image):
    image = image - image.min()
    return image[: image.shape[0] // 2].sum() / max(image.sum(), 1e-9)


def test_xray_policy_never_flips():
    for augmented, _ in _run(make_policy("xray"), _asymmetric_image()):
        assert _mass_left(augmented) > 0.65 and _mass_top(augmented) > 0.65


def test_traffic_sign_policy_never_flips_without_a_flip_map():
    for augmented, label in _run(make_policy("traffic_signs"), _asymmetric_image(), label=3):
        assert _mass_left(augmented) > 0.65 and label == 3


def test_traffic_sign_flip_map_flips_and_relabels_only_mapped_classes():
    policy = make_policy("traffic_signs", {"horizontal_flip": True, "flip_map": {0: 1, 1: 0, 2: 2}, "rotation": 0.0,
                                           "shift": 0.0, "zoom": 0.0, "perspective": 0.0})
    flipped = [(augmented, label) for augmented, label in _run(policy, _asymmetric_image(), label=0) if _mass_left(augmented) < 0.2]
    assert 5 < len(flipped) < 35  # about half
    assert all(label == 1 for _, label in flipped)
    kept = [(a, l) for a, l in _run(policy, _asymmetric_image(), label=0) if _mass_left(a) > 0.65]
    assert all(label == 0 for _, label in kept)
    for augmented, label in _run(policy, _asymmetric_image(), label=5):  # not in the map: never flipped
        assert _mass_left(augmented) > 0.65 and label == 5


def test_defects_policy_uses_flips_and_quarter_turns():
    results = _run(make_policy("defects"), _asymmetric_image())
    corners = {(_mass_left(a) > 0.5, _mass_top(a) > 0.5) for a, _ in results}
    assert len(corners) == 4  # the block visits every corner


def test_same_seed_same_result():
    policy = make_policy("traffic_signs")
    first = _run(policy, _asymmetric_image(), seeds=[3])[0][0]
    again = _run(policy, _asymmetric_image(), seeds=[3])[0][0]
    other = _run(policy, _asymmetric_image(), seeds=[4])[0][0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_outputs_stay_in_pixel_range_and_shape():
    image = np.random.default_rng(0).uniform(0, 255, (24, 24, 3)).astype(np.float32)
    for name in POLICIES:
        for augmented, _ in _run(make_policy(name), image, seeds=range(5)):
            assert augmented.shape == (24, 24, 3)
            assert augmented.min() >= 0.0 and augmented.max() <= 255.0


@pytest.mark.parametrize("policy, operation", [("xray", "horizontal_flip"), ("xray", "rotate90"), ("traffic_signs", "horizontal_flip")])
def test_unsafe_operation_is_refused_with_the_domain_reason(policy, operation):
    with pytest.raises(ValueError, match=rf"Augmentation '{operation}' is unsafe for '{policy}': .* force it with a reason"):
        make_policy(policy, {operation: True})


def test_forcing_an_unsafe_operation_records_the_reason():
    policy = make_policy("xray", {"horizontal_flip": True}, force={"horizontal_flip": "phantom images, no anatomy"})
    assert policy.forced == {"horizontal_flip": "phantom images, no anatomy"}
    with pytest.raises(ValueError, match=r"is unsafe for 'xray'"):
        make_policy("xray", {"horizontal_flip": True}, force={"horizontal_flip": "  "})


def test_unknown_policy_and_parameter():
    with pytest.raises(ValueError, match=r"Unknown augmentation policy 'medical'\. Available: none, xray, traffic_signs, defects"):
        make_policy("medical")
    with pytest.raises(ValueError, match=r"Unknown augmentation parameter\(s\) \['rotaton'\] for policy 'xray'"):
        make_policy("xray", {"rotaton": 3})


@pytest.mark.parametrize("views", TEST_TIME_VIEWS)
def test_test_time_views_are_distinct_and_form_a_group(views):
    image = tf.constant(_asymmetric_image()[None])
    viewed = [symmetric_view(image, index).numpy() for index in range(views)]
    # Distinct: no view repeats another, so averaging really covers `views` orientations.
    assert len({item.tobytes() for item in viewed}) == views
    # Closed: every view of every view is again one of the views (a group, so the mean is symmetric).
    for index in range(views):
        for item in viewed:
            again = symmetric_view(tf.constant(item), index).numpy().tobytes()
            assert again in {v.tobytes() for v in viewed}


@pytest.mark.parametrize("views", [2, 4, 8])
def test_test_time_views_follow_what_the_policy_trained(views):
    check_test_time_views(views, POLICIES["defects"])
    with pytest.raises(ValueError, match=rf"{views} test-time views need training augmentation with horizontal_flip.*"
                                         r"policy 'xray' lacks horizontal_flip"):
        check_test_time_views(views, POLICIES["xray"])
    relabelling = make_policy("traffic_signs", {"flip_map": {0: 1, 1: 0}})
    with pytest.raises(ValueError, match=r"horizontal_flip without a flip_map \(mirroring changes these labels\)"):
        check_test_time_views(views, relabelling)
    check_test_time_views(1, POLICIES["xray"])
    with pytest.raises(ValueError, match=r"test_time_views must be one of \(1, 2, 4, 8\)\. Received: 3"):
        check_test_time_views(3, POLICIES["defects"])
