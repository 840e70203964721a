"""OmegaConf's ``to_yaml`` text, written by libyaml's emitter where the two write the same.

A fused sweep saves each job's three configs as Hydra does (``.hydra/config.yaml``,
``hydra.yaml``, ``overrides.yaml``, each ``OmegaConf.to_yaml``), and PyYAML's pure-Python
emitter is most of that: about 8 ms a job of the sweep's planning, 3 ms through libyaml
(bench/README.md). The two emitters differ on some text: characters outside printable ASCII
(libyaml escapes those beyond the Basic Multilingual Plane, and some others), the line
breaks of a double-quoted string, and long keys. Libyaml writes a config only when every
string in it is printable ASCII or a line break, a string Python's emitter would not write
double-quoted (its own analysis says), every key a short one-line string, and every other
value a number, a boolean or null; any other config is written by OmegaConf itself."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml
from omegaconf import OmegaConf

from runner.compat import written_for

OMEGACONF = ("2.3",)
_PRINTABLE = re.compile(r"[\x20-\x7e\n]*\Z")
# Python's emitter writes a key of 128 characters or more, quotes included, in the explicit
# "? key" form, and libyaml does not: libyaml takes only keys well under that.
_LONGEST_KEY = 64


def to_yaml(cfg: Any) -> str:
    """``OmegaConf.to_yaml(cfg)``, the same text. Fallback (another OmegaConf, or PyYAML
    without libyaml): OmegaConf's own."""
    dumper = _libyaml_dumper()
    if dumper is None:
        return OmegaConf.to_yaml(cfg)
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    if not _same_either_way(container):
        return OmegaConf.to_yaml(cfg)
    return yaml.dump(
        container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=dumper
    )


@lru_cache(maxsize=1)
def _libyaml_dumper() -> type | None:
    """OmegaConf's dumper (its string representer quotes a string that reads as another
    type) on libyaml's emitter; None where PyYAML has no libyaml or OmegaConf is not a
    version this was written for."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    if not written_for("omegaconf", OMEGACONF, "the saved configs' libyaml emitter"):
        return None
    from omegaconf._utils import OmegaConfDumper

    class Dumper(yaml.CDumper):
        pass

    Dumper.add_representer(str, OmegaConfDumper.str_representer)
    return Dumper


def _same_either_way(node: Any) -> bool:
    """Whether both emitters write ``node`` (plain data) the same: see the module's
    docstring."""
    if isinstance(node, dict):
        return all(
            (not isinstance(key, str) or _short_key(key)) and _same_either_way(value)
            for key, value in node.items()
        )
    if isinstance(node, list):
        return all(_same_either_way(item) for item in node)
    if isinstance(node, str):
        return _plain_string(node)
    # Numbers, booleans and null are plain scalars either way; anything else (bytes, paths)
    # goes through OmegaConf.
    return node is None or isinstance(node, int | float)


@lru_cache(maxsize=4096)
def _plain_string(text: str) -> bool:
    if not _PRINTABLE.match(text):
        return False
    return yaml.emitter.Emitter(None, allow_unicode=True).analyze_scalar(text).allow_single_quoted


def _short_key(key: str) -> bool:
    return 0 < len(key) <= _LONGEST_KEY and "\n" not in key and _plain_string(key)
