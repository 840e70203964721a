"""The documentation stays true: every relative link of README.md and the pages it links
to reaches a file and a heading that exist, and docs/configuration.md describes every key
of the config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a Markdown page's headings."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_a_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_the_configuration_page_describes_every_key(make_cfg):
    documented = set()
    for row in (ROOT / "docs/configuration.md").read_text().splitlines():
        if row.startswith("| `"):
            documented.update(re.findall(r"`([\w.]+)`", row.split("|")[1]))
    cfg = OmegaConf.to_container(make_cfg(), resolve=False)
    cfg.pop("hydra", None)

    def leaves(node: dict, prefix: str = ""):
        for key, value in node.items():
            if isinstance(value, dict) and key not in GROUPS:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert not [key for key in leaves(cfg) if key not in documented]


# Config groups that pick Hydra's plugins: no key of the job's config.
GROUPS_OF_PLUGINS = ("sweep",)
# Config groups whose options' keys are the options' own business (conf/loss/, and the
# optimizer's, documented with the group).
GROUPS = ("loss", "optimizer")


def _documented_defaults() -> dict[str, str]:
    """Each key of docs/configuration.md's table whose default cell is a value, or one value
    per key of the row (```20`, `32```), or ``unset``: the key and that value as written."""
    found = {}
    for row in (ROOT / "docs/configuration.md").read_text().splitlines():
        cells = row.split("|")
        if not row.startswith("| `") or len(cells) < 4:
            continue
        keys = re.findall(r"`([\w.]+)`", cells[1])
        default = cells[3].strip()
        if default == "unset":
            values = ["null"] * len(keys)
        elif re.fullmatch(r"`[^`]+`(, `[^`]+`)*", default):
            values = re.findall(r"`([^`]+)`", default)
        else:
            continue
        if len(values) == len(keys):
            found.update(zip(keys, values, strict=True))
    return found


def test_the_documented_defaults_are_the_configs(make_cfg):
    cfg = make_cfg()
    documented = _documented_defaults()
    assert len(documented) >= 25, sorted(documented)
    for key, written in documented.items():
        if key in ("backend", "tracking.uri", *GROUPS_OF_PLUGINS):
            continue  # the tests set the first two; a group that picks plugins has no key
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_list(value):
            value = OmegaConf.to_container(value)
        elif value is None or isinstance(value, bool):
            value = "null" if value is None else str(value).lower()
        else:
            # An enum, or a config group: its name.
            value = getattr(value, "name", value)
        assert written == str(value), f"{key}: documented {written}, the config has {value}"
