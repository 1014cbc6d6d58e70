"""Settings: each is declared once, and recipes, TrainConfig and the CLI are made from the declarations."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from tfx_transfer.config.settings import NOT_TRAINING_CONFIG, SECTIONS, Setting, SettingError, defaults, setting


@pytest.mark.parametrize("value, expected", [
    (0, r"training.epochs: must be at least 1; received 0"),
    (2.5, r"training.epochs: expected an integer, received 2.5 \(float\)"),
    (True, r"training.epochs: expected an integer, received True \(bool\)"),
    (None, r"training.epochs: must not be empty \(null\); expected an integer"),
])
def test_check_names_key_expected_and_received(value, expected):
    with pytest.raises(SettingError, match=expected):
        setting("training", "epochs").check(value, "training.epochs")


def test_check_converts_an_integer_to_a_number_and_suggests_the_closest_choice():
    assert setting("training", "learning_rate").check(1) == 1.0
    assert isinstance(setting("training", "learning_rate").check(1), float)
    with pytest.raises(SettingError, match=r"must be one of avg, max, avg_max; received 'avgmax'\. Did you mean 'avg_max'\?"):
        setting("model", "pooling").check("avgmax")
    assert setting("training", "layer_decay").check(None) is None


@pytest.mark.parametrize("minimum, maximum, open_minimum, open_maximum, inside, outside, words", [
    (0.0, 1.0, False, True, 0.0, 1.0, r"in \[0.0, 1.0\)"),
    (0.0, 1.0, True, False, 1.0, 0.0, r"in \(0.0, 1.0\]"),
    (0.0, None, True, False, 1e-9, 0.0, r"above 0.0"),
    (None, 10, False, False, 10, 11, r"at most 10"),
])
def test_bounds_are_inclusive_unless_open(minimum, maximum, open_minimum, open_maximum, inside, outside, words):
    item = Setting("x", (float,), inside, "help", minimum=minimum, maximum=maximum,
                   open_minimum=open_minimum, open_maximum=open_maximum)
    assert item.check(inside) == inside
    with pytest.raises(SettingError, match=rf"x: must be {words}; received"):
        item.check(outside)


@pytest.mark.parametrize("section", SECTIONS)
def test_every_default_passes_its_own_check_and_has_help(section):
    for item in SECTIONS[section]:
        assert item.check(item.default) == item.default, item.name
        assert item.help and not item.help.endswith("."), f"{section}.{item.name}: one line of help, no full stop"
    assert len({item.name for item in SECTIONS[section]}) == len(SECTIONS[section])


def test_recipe_sections_are_made_from_the_declarations():
    from tfx_transfer.config.recipe import SECTIONS as RECIPE_SECTIONS

    assert list(RECIPE_SECTIONS) == list(SECTIONS)
    for section, section_class in RECIPE_SECTIONS.items():
        assert [f.name for f in dataclasses.fields(section_class)] == [item.name for item in SECTIONS[section]]
        assert dataclasses.asdict(section_class()) == defaults(section)


def test_train_config_takes_its_defaults_and_checks_from_the_declarations():
    from tfx_transfer.training.train import TrainConfig

    config = TrainConfig()
    for item in SECTIONS["training"]:
        if item.name not in NOT_TRAINING_CONFIG["training"]:
            assert getattr(config, item.name) == item.default, item.name
    assert config.image_size == (setting("model", "image_size").default,) * 2
    # The same declaration refuses the same value, whichever door it comes through.
    with pytest.raises(ValueError, match=r"TrainConfig pooling: must be one of avg, max, avg_max; received 'avgmax'"):
        TrainConfig(pooling="avgmax")
    with pytest.raises(ValueError, match=r"TrainConfig layer_decay: must be in \(0.0, 1.0\]; received 1.5"):
        TrainConfig(layer_decay=1.5)
    assert TrainConfig(learning_rate=1).learning_rate == 1.0


def test_reading_every_recipe_imports_neither_tensorflow_nor_keras():
    code = (
        "import sys\n"
        "from tfx_transfer.config.recipe import list_recipes, load_recipe\n"
        "for path in list_recipes():\n"
        "    load_recipe(path).quick_version()\n"
        "import tfx_transfer.config.settings, tfx_transfer.config.policies, tfx_transfer.config.backbones\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(heavy[:5])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_recipes_reference_table_is_the_generated_one():
    from tfx_transfer.config.recipe import recipes_dir
    from tfx_transfer.config.settings import reference_markdown

    text = (recipes_dir() / "README.md").read_text()
    block = text.split("<!-- settings:")[1].split("-->", 1)[1].split("<!-- /settings -->")[0].strip()
    assert block == reference_markdown(), "regenerate the table: python -c 'from tfx_transfer.config.settings import reference_markdown; print(reference_markdown())'"
    assert reference_markdown().count("\n") == 1 + sum(len(items) for items in SECTIONS.values())
