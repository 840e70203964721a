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


# Config groups whose options' keys are the options' own business (conf/loss/, and the
# optimizer's, documented with the group).
GROUPS = ("loss", "optimizer")
