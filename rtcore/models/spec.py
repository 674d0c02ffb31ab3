"""Model spec strings: ``impala:k=7``, ``impala:k=7,deep=1``, ``impala-deep:k=7``, ``nature``, ``minatar``,
``mlp:hidden=256,layers=2``, ``...,dueling=1``, ``...,noisy=1`` (noisy linear layers),
``...,atoms=51,vmin=0,vmax=200`` (a C51 distributional head).

A spec names an architecture and its options; :func:`parse_model_spec` turns it into a
:class:`ModelSpec` (and raises a ``ValueError`` that says what was wrong and what was expected), and
``str(spec)`` gives back the canonical string, so a spec round-trips through configs and run
directories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ModelSpec", "parse_model_spec", "ARCHITECTURES"]

_HEAD_KEYS = ("noisy", "atoms", "vmin", "vmax")  # every architecture's head takes these

# architecture -> (accepted keys, one-line description)
ARCHITECTURES: dict[str, tuple[tuple[str, ...], str]] = {
    "impala": (("k", "deep", "dueling", "hidden") + _HEAD_KEYS, "Impala ResNet CNN, 15 conv layers (deep=1: 30), width multiplier k"),
    "impala-deep": (("k", "dueling", "hidden") + _HEAD_KEYS, "alias of impala:deep=1"),
    "nature": (("k", "dueling", "hidden") + _HEAD_KEYS, "Nature DQN CNN (Mnih et al. 2015) at k=2; width multiplier k"),
    "minatar": (("k", "dueling", "hidden") + _HEAD_KEYS, "MinAtar paper's net: one 3x3 conv, int(16k) channels, hidden=128 units"),
    "mlp": (("hidden", "layers", "dueling") + _HEAD_KEYS, "fully connected: `layers` hidden layers of `hidden` units (256, 2)"),
}

_DEFAULT_K = {"impala": 1.0, "nature": 2.0, "minatar": 1.0, "mlp": 1.0}
_DEFAULT_HIDDEN = {"impala": 512, "nature": 512, "minatar": 128, "mlp": 256}
_DEFAULT_LAYERS = 2


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        arch: ``"impala"``, ``"nature"``, ``"minatar"`` or ``"mlp"``.
        k: width multiplier: convolution channels are ``int(16k)``, ``int(32k)`` (as in the paper's code).
        deep: Impala only: six conv stacks instead of three (30 conv layers instead of 15).
        dueling: dueling head (separate value and advantage streams, Wang et al. 2016).
        hidden: width of the fully connected layer(s) after the convolutions.
        noisy: the head's linear layers are noisy (factorised Gaussian, sigma0 = 0.5; Fortunato et al.).
        atoms: 1 = one Q-value per action; > 1 = a C51 distributional head over ``atoms`` returns.
        v_min, v_max: the C51 support (``atoms > 1`` only).
        hidden: width of the fully connected layer(s) (default 512; minatar 128; mlp 256).
        layers: mlp only: hidden layers (default 2).
    """

    arch: str = "impala"
    k: float = 1.0
    deep: bool = False
    dueling: bool = False
    hidden: int = 512
    noisy: bool = False
    atoms: int = 1
    v_min: float = 0.0
    v_max: float = 200.0
    layers: int = _DEFAULT_LAYERS

    def __str__(self) -> str:
        parts = [] if self.arch == "mlp" else [f"k={_fmt_number(self.k)}"]
        if self.deep:
            parts.append("deep=1")
        if self.dueling:
            parts.append("dueling=1")
        if self.hidden != _DEFAULT_HIDDEN.get(self.arch, 512):
            parts.append(f"hidden={self.hidden}")
        if self.arch == "mlp" and self.layers != _DEFAULT_LAYERS:
            parts.append(f"layers={self.layers}")
        if self.noisy:
            parts.append("noisy=1")
        if self.atoms != 1:
            parts.append(f"atoms={self.atoms},vmin={_fmt_number(self.v_min)},vmax={_fmt_number(self.v_max)}")
        return f"{self.arch}:{','.join(parts)}" if parts else self.arch


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _parse_bool(key: str, value: str, spec: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"model spec {spec!r}: {key}={value!r} is not a boolean; expected 0/1/true/false")


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parses ``"arch[:key=value,...]"`` into a :class:`ModelSpec`.

    Architectures: ``impala`` (keys ``k``, ``deep``, ``dueling``, ``hidden``), ``impala-deep`` (= impala
    with ``deep=1``), ``nature`` (keys ``k``, ``dueling``, ``hidden``; ``k`` defaults to 2, the Nature
    DQN's own widths), ``minatar`` (keys ``k``, ``dueling``, ``hidden``: 16k channels, 128 hidden units
    by default), ``mlp`` (keys ``hidden``, ``layers``, ``dueling``: 2 layers of 256 by default). Raises
    ``ValueError`` for an unknown architecture, an unknown or repeated key, or a bad value.
    """
    if isinstance(spec, ModelSpec):
        _validate(spec, str(spec))
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"model spec must be a str or ModelSpec, got {type(spec).__name__}")
    text = spec.strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r} in spec {spec!r}; expected one of {', '.join(ARCHITECTURES)}")
    accepted = ARCHITECTURES[name][0]
    arch = "impala" if name == "impala-deep" else name
    fields: dict[str, object] = {"arch": arch, "k": _DEFAULT_K[arch], "deep": name == "impala-deep",
                                 "hidden": _DEFAULT_HIDDEN[arch]}
    seen: set[str] = set()
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise ValueError(f"model spec {spec!r}: {item!r} is not key=value")
        if key not in accepted:
            raise ValueError(f"model spec {spec!r}: unknown key {key!r}; {name} accepts {', '.join(accepted)}")
        if key in seen:
            raise ValueError(f"model spec {spec!r}: key {key!r} given twice")
        seen.add(key)
        if key == "k":
            try:
                fields["k"] = float(value)
            except ValueError:
                raise ValueError(f"model spec {spec!r}: k={value!r} is not a number") from None
        elif key in ("hidden", "atoms", "layers"):
            try:
                fields[key] = int(value)
            except ValueError:
                raise ValueError(f"model spec {spec!r}: {key}={value!r} is not an integer") from None
        elif key in ("vmin", "vmax"):
            try:
                fields["v_min" if key == "vmin" else "v_max"] = float(value)
            except ValueError:
                raise ValueError(f"model spec {spec!r}: {key}={value!r} is not a number") from None
        else:
            fields[key] = _parse_bool(key, value, spec)
    result = ModelSpec(**fields)  # type: ignore[arg-type]
    _validate(result, spec)
    return result


def _validate(s: ModelSpec, spec: str) -> None:
    if s.arch not in _DEFAULT_K:
        raise ValueError(f"model spec {spec!r}: unknown architecture {s.arch!r}; expected one of "
                         f"{', '.join(_DEFAULT_K)}")
    if not (math.isfinite(s.k) and int(16 * s.k) >= 1):
        raise ValueError(f"model spec {spec!r}: k={s.k} gives no channels; expected k >= 1/16")
    if s.hidden < 1:
        raise ValueError(f"model spec {spec!r}: hidden={s.hidden} must be a positive integer")
    if s.atoms < 1:
        raise ValueError(f"model spec {spec!r}: atoms={s.atoms} must be 1 (no distribution) or >= 2")
    if s.atoms > 1 and not (math.isfinite(s.v_min) and math.isfinite(s.v_max) and s.v_min < s.v_max):
        raise ValueError(f"model spec {spec!r}: the support [vmin={s.v_min}, vmax={s.v_max}] must be finite with vmin < vmax")
    if s.deep and s.arch != "impala":
        raise ValueError(f"model spec {spec!r}: deep=1 applies to impala only")
    if not 0 <= s.layers <= 64:
        raise ValueError(f"model spec {spec!r}: layers={s.layers}; expected an integer in [0, 64]")
    if s.layers != _DEFAULT_LAYERS and s.arch != "mlp":
        raise ValueError(f"model spec {spec!r}: layers applies to mlp only")
