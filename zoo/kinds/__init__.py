"""The registry of model kinds: `model.kind` names a ModelKind (zoo/kinds/base.py), which the stages ask about
everything kind-specific. A new kind is one module with a ModelKind subclass, registered with `register`.

`model.kind` is a plain string checked against this registry in `config.validate`, not an Enum of the schema: an
Enum is closed when the schema is imported, so a kind defined elsewhere (a plug-in, a test) could not get a
config without editing zoo/config.py or patching the Enum. The price is that Hydra no longer rejects an unknown
kind while composing; `kind_of` does, right after, naming the registered kinds.
"""

from __future__ import annotations

from zoo.errors import ConfigError
from zoo.kinds.base import ModelKind
from zoo.kinds.decoder import DecoderKind
from zoo.kinds.encoder import EncoderKind
from zoo.kinds.encoder_decoder import EncoderDecoderKind
from zoo.schema import Bundle, ZooConfig

KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Make `kind` the one named `kind.name` (replacing one of that name)."""
    KINDS[kind.name] = kind
    return kind


def problems(cfg: ZooConfig) -> list[str]:
    """What the entry's kind finds wrong with `cfg` (config.validate lists them with the kind-neutral ones)."""
    if cfg.model.kind not in KINDS:
        return [f"model.kind: {cfg.model.kind!r} is not a registered model kind ({', '.join(KINDS)}; zoo/kinds/)"]
    kind = KINDS[cfg.model.kind]
    found = kind.problems(cfg)
    if Bundle.web in cfg.export.bundles and not kind.generates:
        found.append(f"export.bundles: web runs a decoder's prefill/decode loop; {cfg.model.name} is {kind.name}")
    return found


def kind_of(cfg: ZooConfig) -> ModelKind:
    """The kind of the entry; ConfigError for a config it does not suit (for callers that built `cfg` without
    config.load)."""
    if found := problems(cfg):
        raise ConfigError.of(found)
    return KINDS[cfg.model.kind]


for _kind in (DecoderKind(), EncoderDecoderKind(), EncoderKind()):
    register(_kind)
