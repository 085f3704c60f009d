"""Models: built-ins (`mlp`, `cnn`, `logreg`), models described as a list of layers (as in a
config file), and any `torch.nn.Module` factory from Python.

Every peer builds its model with `build_model(spec, input_shape, num_classes, seed)`: the
weights are drawn under `torch.random.fork_rng` seeded with `seed`, so all peers that share
the seed start from identical weights, and the process-wide torch RNG is left as it was
(simulated peers in one process do not disturb each other). Not thread-safe: build models
from one thread at a time.

Layer lists (e.g. TOML `[[model.layers]]` tables), one mapping per layer:

    {type = "conv2d", out = 16, kernel = 5, stride = 1, padding = 0}
    {type = "maxpool2d", kernel = 2, stride = 2}      # stride defaults to kernel
    {type = "relu"} | {type = "tanh"} | {type = "flatten"}
    {type = "dropout", p = 0.5}
    {type = "linear", out = 200}    # `out` may be left out on the last layer: num_classes

Shapes are checked while building; errors name the layer index and field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ringfl.errors import ConfigError

ModelFactory = Callable[[], nn.Module]
ModelSpec = str | Sequence[Mapping[str, Any]] | ModelFactory

# Allowed fields per layer type: name -> (required, default or None).
_LAYER_FIELDS: dict[str, dict[str, tuple[bool, Any]]] = {
    "linear": {"out": (False, None)},
    "conv2d": {
        "out": (True, None),
        "kernel": (True, None),
        "stride": (False, 1),
        "padding": (False, 0),
    },
    "maxpool2d": {"kernel": (True, None), "stride": (False, None)},
    "relu": {},
    "tanh": {},
    "flatten": {},
    "dropout": {"p": (False, 0.5)},
}
LAYER_TYPES = tuple(_LAYER_FIELDS)

BUILTIN_LAYERS: dict[str, list[dict[str, Any]]] = {
    # 784-200-200-10 on MNIST (McMahan et al. 2017's "2NN"): 199,210 parameters.
    "mlp": [
        {"type": "flatten"},
        {"type": "linear", "out": 200},
        {"type": "relu"},
        {"type": "linear", "out": 200},
        {"type": "relu"},
        {"type": "linear"},
    ],
    # 2 conv + 2 fc: 215,370 parameters on 28x28x1 input.
    "cnn": [
        {"type": "conv2d", "out": 16, "kernel": 5, "padding": 2},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "conv2d", "out": 32, "kernel": 5, "padding": 2},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "flatten"},
        {"type": "linear", "out": 128},
        {"type": "relu"},
        {"type": "linear"},
    ],
    "logreg": [{"type": "flatten"}, {"type": "linear"}],
}
BUILTIN_MODELS = tuple(BUILTIN_LAYERS)


def _int_field(layer: Mapping[str, Any], key: str, where: str, minimum: int) -> int:
    v = layer[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{where}.{key} must be an integer >= {minimum}, got {v!r}")
    return v


def layers_model(
    layers: Sequence[Mapping[str, Any]],
    input_shape: Sequence[int],
    num_classes: int,
    where: str = "model.layers",
) -> nn.Sequential:
    """Build an `nn.Sequential` from layer mappings, checking shapes as it goes.
    `input_shape` excludes the batch dimension. Raises `ConfigError` naming `where[i].field`."""
    if not layers:
        raise ConfigError(f"{where}: at least one layer is needed")
    shape = tuple(int(d) for d in input_shape)
    modules: list[nn.Module] = []
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        at = f"{where}[{i}]"
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{at}: a layer must be a table/mapping, got {layer!r}")
        kind = layer.get("type")
        if kind not in _LAYER_FIELDS:
            raise ConfigError(
                f"{at}.type: unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}"
            )
        fields = _LAYER_FIELDS[kind]
        for key in layer:
            if key != "type" and key not in fields:
                allowed = ", ".join(fields) or "none"
                raise ConfigError(
                    f"{at}.{key}: unknown field for a {kind} layer (allowed: {allowed})"
                )
        spec = {name: layer.get(name, default) for name, (_, default) in fields.items()}
        for name, (req, _) in fields.items():
            if req and name not in layer:
                raise ConfigError(f"{at}.{name}: required for a {kind} layer")
        if kind == "linear":
            if len(shape) != 1:
                raise ConfigError(
                    f"{at} (linear): input has shape {shape}; add a flatten layer before it"
                )
            if "out" not in layer and i != last:
                raise ConfigError(f"{at}.out: required (only the last layer may leave it out)")
            out = num_classes if "out" not in layer else _int_field(layer, "out", at, 1)
            modules.append(nn.Linear(shape[0], out))
            shape = (out,)
        elif kind == "conv2d":
            if len(shape) != 3:
                raise ConfigError(
                    f"{at} (conv2d): needs (channels, height, width) input, got shape {shape}"
                )
            out = _int_field(layer, "out", at, 1)
            k = _int_field(layer, "kernel", at, 1)
            s = _int_field(spec, "stride", at, 1)
            p = _int_field(spec, "padding", at, 0)
            h, w = ((d + 2 * p - k) // s + 1 for d in shape[1:])
            if h < 1 or w < 1:
                raise ConfigError(
                    f"{at}.kernel: kernel {k} (padding {p}) is larger than the input "
                    f"{shape[1]}x{shape[2]}"
                )
            modules.append(nn.Conv2d(shape[0], out, k, stride=s, padding=p))
            shape = (out, h, w)
        elif kind == "maxpool2d":
            if len(shape) != 3:
                raise ConfigError(
                    f"{at} (maxpool2d): needs (channels, height, width) input, got shape {shape}"
                )
            k = _int_field(layer, "kernel", at, 1)
            s = k if spec["stride"] is None else _int_field(spec, "stride", at, 1)
            h, w = ((d - k) // s + 1 for d in shape[1:])
            if h < 1 or w < 1:
                raise ConfigError(
                    f"{at}.kernel: pooling {k} is larger than the input {shape[1]}x{shape[2]}"
                )
            modules.append(nn.MaxPool2d(k, stride=s))
            shape = (shape[0], h, w)
        elif kind == "flatten":
            modules.append(nn.Flatten())
            n = 1
            for d in shape:
                n *= d
            shape = (n,)
        elif kind == "dropout":
            p = spec["p"]
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise ConfigError(f"{at}.p: dropout probability must be in [0, 1), got {p!r}")
            modules.append(nn.Dropout(float(p)))
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "tanh":
            modules.append(nn.Tanh())
    if shape != (num_classes,):
        raise ConfigError(
            f"{where}: the model outputs shape {shape}, but the data has {num_classes} classes; "
            f"the last layer ({where}[{last}]) must be a linear layer with out = {num_classes}"
        )
    return nn.Sequential(*modules)


def build_model(
    spec: ModelSpec, input_shape: Sequence[int], num_classes: int, seed: int
) -> nn.Module:
    """A model for inputs of `input_shape` (no batch dim) and `num_classes` outputs, with
    weights drawn from `seed`. `spec`: a built-in name (`mlp`, `cnn`, `logreg`), a list of
    layer mappings, or a zero-argument factory returning an `nn.Module`."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only, as fork_rng(devices=[])
        if isinstance(spec, str):
            if spec not in BUILTIN_LAYERS:
                raise ConfigError(
                    f"model.name: unknown model {spec!r}; built-ins: {', '.join(BUILTIN_MODELS)}"
                )
            model: nn.Module = layers_model(
                BUILTIN_LAYERS[spec], input_shape, num_classes, where=f"model {spec!r}"
            )
        elif callable(spec):
            model = spec()
            if not isinstance(model, nn.Module):
                raise ConfigError(f"model factory returned {type(model).__name__}, not nn.Module")
        else:
            model = layers_model(spec, input_shape, num_classes)
    _check_output(model, input_shape, num_classes)
    return model


def _check_output(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *input_shape)))
    except Exception as exc:
        raise ConfigError(
            f"model: a forward pass on input shape {tuple(input_shape)} failed: {exc}"
        ) from exc
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, num_classes):
        raise ConfigError(
            f"model: outputs shape {tuple(out.shape[1:])} per sample, expected ({num_classes},)"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
