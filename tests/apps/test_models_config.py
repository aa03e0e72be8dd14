"""``saved_models/models.config`` (TF Serving's model config) lists every release folder in git, and only those."""

import re

from apps.releases import DEFAULT_MODELS_DIR


def test_every_release_in_the_tree_is_served_by_models_config():
    text = (DEFAULT_MODELS_DIR / "models.config").read_text()
    configs = re.findall(r'name:\s*"([^"]+)"\s*base_path:\s*"/models/([^"]+)"', text)
    assert configs and all(name == folder for name, folder in configs), configs
    releases = {
        path.name for path in DEFAULT_MODELS_DIR.iterdir()
        if path.is_dir() and any(v.is_dir() and v.name.isdigit() and (v / "saved_model.pb").is_file() for v in path.iterdir())
    }
    assert {name for name, _ in configs} == releases
