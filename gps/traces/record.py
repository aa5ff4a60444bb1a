"""``gps-trace record``: routing of a Hugging Face MoE model, captured by forward hooks.

A forward pre-hook on every router module (found by the architecture registry of
:mod:`gps.traces.routing`) takes the hidden states entering the router, computes the router
logits ``hidden @ weight.T`` in float32 and hands them to the torch-free routing rule
(:func:`gps.traces.routing.route`), which reproduces the model's top-k (softmax top-k,
DeepSeek's grouped top-k, DeepSeek-V3's bias-corrected sigmoid). Prompts are batched with
right padding; padding tokens are dropped. Needs the ``[record]`` extra (torch,
transformers); everything that does not touch torch (prompt files, router discovery,
logits -> trace) is importable and tested without it.

Hidden activations (``--save-hidden LAYERS``): :class:`HiddenCapture` keeps, for the chosen
MoE layers, every real token's activations as float16 ``TokenTrace.hidden [T, H, d]``. With
``hidden_kind="pre_attention_normed"`` (default) it is a forward hook on each chosen decoder
block's ``input_layernorm`` (the normalised pre-attention activations, what the pre-attention
routers of arXiv 2511.10676 read); with ``"router_input"`` it is one more consumer of
:class:`RouterTaps` (the router's own input, after attention and the post-attention norm).
:func:`parse_layers`, :func:`select_layers` and :func:`hidden_bytes` are torch-free.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gps.traces.routing import (
    ARCHITECTURES,
    Architecture,
    RoutingRule,
    architecture_of,
    logits_to_trace,
    rule_from_config,
)
from gps.traces.trace import TokenTrace
from gps.traces.validate import TraceError

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_INSTALL_HINT = "gps-trace record needs the [record] extra: pip install -e '.[record]'"
_OPTION = "--save-hidden"
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
# Where each kind of hidden activation is taken, as a module name inside the decoder block
# ``...layers.<i>.`` (``None``: the router's own input, via ``RouterTaps.consumers``). All six
# architectures of the registry name the block's first norm ``input_layernorm``
# (transformers' modeling_{mixtral,qwen2_moe,qwen3_moe,olmoe,deepseek_v2,deepseek_v3}.py).
HIDDEN_KINDS: dict[str, str | None] = {
    "pre_attention_normed": "input_layernorm",
    "router_input": None,
}
HIDDEN_BYTES = 2  # float16 per stored value


def parse_layers(spec: str) -> tuple[int, ...] | None:
    """MoE-layer indices from ``--save-hidden``: ``"all"`` -> ``None``; ``"0,3,5"``, ``"0-7"``
    or a mix (``"0-2,5"``) -> sorted unique indices (0-based, as ``TokenTrace.experts``'
    layer axis; ranges include both ends).

    Raises:
        ValueError: naming ``--save-hidden`` and the bad part.
    """
    text = str(spec).strip()
    if text.lower() == "all":
        return None
    if not text:
        raise ValueError(f"{_OPTION}: empty; give 'all', a list '0,3,5' or a range '0-7'")
    out: set[int] = set()
    for part in text.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise ValueError(
                f"{_OPTION}: {part.strip()!r} in {text!r} is not a layer index or range "
                "(give 'all', '0,3,5' or '0-7')"
            )
        lo = int(match.group(1))
        hi = lo if match.group(2) is None else int(match.group(2))
        if hi < lo:
            raise ValueError(f"{_OPTION}: range {part.strip()!r} runs backwards")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def select_layers(spec: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """The MoE layers to store of a model with ``num_layers`` MoE layers.

    ``spec``: a ``--save-hidden`` string (:func:`parse_layers`), indices, or ``None`` (all).

    Raises:
        ValueError: naming ``--save-hidden``: bad syntax or an index ``>= num_layers``.
    """
    layers = parse_layers(spec) if isinstance(spec, str) else spec
    if layers is None:
        return list(range(num_layers))
    layers = sorted({int(i) for i in layers})
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise ValueError(
            f"{_OPTION}: MoE layer(s) {bad or layers} out of range; the model has "
            f"{num_layers} MoE layers (0-{num_layers - 1})"
        )
    return layers


def hidden_bytes(num_tokens: int, num_layers: int, hidden_size: int) -> int:
    """Bytes of ``hidden [T, H, d]`` in float16: ``T * H * d * 2``."""
    return int(num_tokens) * int(num_layers) * int(hidden_size) * HIDDEN_BYTES


def hidden_size_message(num_tokens: int, layers: Sequence[int], hidden_size: int) -> str:
    """The estimate printed before recording, e.g. ``... = 1,638,400,000 bytes (1.53 GiB) ...``."""
    total = hidden_bytes(num_tokens, len(layers), hidden_size)
    size = float(total)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    shown = ",".join(str(i) for i in layers) if len(layers) <= 8 else (
        f"{layers[0]},{layers[1]},...,{layers[-1]}")  # fmt: skip
    return (
        f"{_OPTION}: {num_tokens} tokens x {len(layers)} MoE layers [{shown}] x d={hidden_size} "
        f"x {HIDDEN_BYTES} bytes (float16) = {total:,} bytes ({size:.3g} {unit}) in memory and "
        "in the trace"
    )


@dataclass(frozen=True)
class Prompt:
    """One prompt: text to tokenise, or token ids as given; ``domain`` labels its dataset."""

    text: str | None = None
    input_ids: tuple[int, ...] | None = None
    domain: str = ""


def read_prompts(path: str | os.PathLike) -> list[Prompt]:
    """Prompts from a ``.txt`` (one per non-empty line) or ``.jsonl`` file.

    JSON Lines records carry ``text`` (or ``prompt``) or ``input_ids`` (a list of ints), and
    optionally ``dataset`` (or ``domain``) naming the prompt's dataset.

    Raises:
        TraceError: naming ``file:line`` and the field at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(str(path), "<file>", "no such file")
    prompts: list[Prompt] = []
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            if path.suffix != ".jsonl":
                prompts.append(Prompt(text=line.rstrip("\n")))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(where, "<json>", f"invalid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise TraceError(where, "<json>", "expected an object")
            domain = str(obj.get("dataset", obj.get("domain", "")))
            if "input_ids" in obj:
                ids = obj["input_ids"]
                if (
                    not isinstance(ids, list)
                    or not ids
                    or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                               for i in ids)
                ):  # fmt: skip
                    raise TraceError(where, "input_ids", "expected a non-empty list of ints >= 0")
                prompts.append(Prompt(input_ids=tuple(ids), domain=domain))
            else:
                text = obj.get("text", obj.get("prompt"))
                if not isinstance(text, str) or not text:
                    raise TraceError(where, "text", "missing (need text, prompt or input_ids)")
                prompts.append(Prompt(text=text, domain=domain))
    if not prompts:
        raise TraceError(str(path), "<file>", "no prompts")
    return prompts


def find_routers(module_names: Sequence[str], arch: Architecture) -> list[str]:
    """Names of the router modules, one per MoE layer, in layer order.

    Matches the architecture's ``router_suffixes`` (the first suffix that matches anything
    wins); the layer number is the ``layers.<i>.`` component of the name.

    Raises:
        ValueError: no router found, or two routers in one layer.
    """
    for suffix in arch.router_suffixes:
        names = [n for n in module_names if n.endswith(suffix)]
        if names:
            break
    else:
        raise ValueError(
            f"no router module ending in {' or '.join(arch.router_suffixes)} "
            f"({arch.model_type}); is this an MoE model?"
        )
    layer_of = {}
    for name in names:
        match = _LAYER.search(name)
        if match is None:
            raise ValueError(f"router {name!r}: no 'layers.<i>.' in its name")
        layer = int(match.group(1))
        if layer in layer_of:
            raise ValueError(f"two routers in layer {layer}: {layer_of[layer]!r}, {name!r}")
        layer_of[layer] = name
    return [layer_of[i] for i in sorted(layer_of)]


@dataclass
class RouterTaps:
    """What the router hooks capture, per MoE layer (index into the router list).

    ``consumers`` are called as ``consumer(layer, hidden)`` with the router's input
    ``hidden [N, H]`` (a torch tensor, N = batch * padded length) on every forward pass;
    the first one stores the float32 router logits. Add consumers (e.g. hidden-state
    capture for ``--save-hidden``) without touching the hooks.
    """

    weights: list  # per layer: the router's weight [E, H] (torch tensor)
    logits: list[list[np.ndarray]] = field(default_factory=list)
    consumers: list[Callable[[int, object], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logits = [[] for _ in self.weights]
        self.consumers.insert(0, self._store_logits)

    def _store_logits(self, layer: int, hidden: object) -> None:
        import torch

        with torch.no_grad():
            w = self.weights[layer]
            h = hidden.reshape(-1, w.shape[1]).float()  # type: ignore[attr-defined]
            self.logits[layer].append((h @ w.float().T).cpu().numpy())

    def hook(self, layer: int) -> Callable:
        def pre_hook(_module: object, args: tuple) -> None:
            for consumer in self.consumers:
                consumer(layer, args[0])

        return pre_hook


@dataclass
class HiddenCapture:
    """Float16 activations of the real (non-padding) tokens at the chosen MoE layers.

    Called as ``capture(layer, hidden)`` (a :class:`RouterTaps` consumer, or from a forward
    hook on the block's ``input_layernorm``) with ``hidden [batch, padded length, d]`` or
    ``[N, d]``; keeps the rows where ``keep`` (the current batch's flattened attention mask,
    set before each forward pass) is true.
    """

    layers: Sequence[int]
    keep: np.ndarray | None = None
    chunks: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.chunks = {int(i): [] for i in self.layers}

    def __call__(self, layer: int, hidden: object) -> None:
        if layer not in self.chunks:
            return
        import torch

        with torch.no_grad():
            h = hidden.reshape(-1, hidden.shape[-1])  # type: ignore[attr-defined]
            if self.keep is not None:
                h = h[torch.from_numpy(self.keep).to(h.device)]
            self.chunks[layer].append(h.to(torch.float16).cpu().numpy())

    def output_hook(self, layer: int) -> Callable:
        """A forward hook passing the module's output to this capture."""

        def hook(_module: object, _args: tuple, output: object) -> None:
            self(layer, output[0] if isinstance(output, tuple) else output)

        return hook

    def stack(self) -> np.ndarray:
        """``[T, H, d]`` float16, columns in ``layers`` order."""
        cols = [np.concatenate(self.chunks[int(i)]) for i in self.layers]
        out = np.empty((cols[0].shape[0], len(cols), cols[0].shape[1]), dtype=np.float16)
        for j, col in enumerate(cols):
            out[:, j] = col
        return out


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "transformers", "moe-gps"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def record_routing(
    model: str | os.PathLike | object,
    prompts: Sequence[Prompt],
    *,
    batch_size: int = 8,
    max_length: int = 2048,
    device: str = "cpu",
    dtype: str = "auto",
    prompts_name: str = "",
    tokenizer: object | None = None,
    save_hidden: str | Sequence[int] | None = None,
    hidden_kind: str = "pre_attention_normed",
    log: Callable[[str], None] | None = None,
) -> TokenTrace:
    """Run ``prompts`` through a Hugging Face MoE model and return its routing.

    Args:
        model: a model id or local folder (loaded with ``AutoModelForCausalLM``), or a loaded
            ``PreTrainedModel``.
        prompts: :class:`Prompt` s; text prompts need a tokenizer (the model's, loaded with
            ``AutoTokenizer`` unless given).
        batch_size: prompts per forward pass (right-padded; padding is not recorded).
        max_length: prompts are truncated to this many tokens.
        device, dtype: where and in which dtype the model runs (``auto``: the checkpoint's).
        prompts_name: provenance (the prompts file name).
        save_hidden: MoE layers whose activations to store in ``hidden`` (``"all"``,
            ``"0,3,5"``, ``"0-7"`` or indices; ``None``: none). The size estimate
            (:func:`hidden_size_message`) goes to ``log`` (default: stderr) before the first
            forward pass.
        hidden_kind: which activations (:data:`HIDDEN_KINDS`): ``"pre_attention_normed"``,
            the output of the MoE layer's decoder-block ``input_layernorm``, or
            ``"router_input"``, the router's own input; stored as ``meta["hidden_kind"]``.

    Returns:
        One token per prompt token (all layers), ``sequence_id`` = prompt index, positions,
        token ids, ``domain`` from the prompts' datasets, ``meta`` with the model id, config
        routing rule, library versions and the time.

    Raises:
        ImportError: torch/transformers missing (the ``[record]`` extra).
        ValueError: an architecture not in the registry, no router found, a bad
            ``save_hidden`` / ``hidden_kind`` (naming the option).
    """
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from None
    from tqdm.auto import tqdm

    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size {batch_size} and max_length {max_length} must be >= 1")
    if hidden_kind not in HIDDEN_KINDS:
        raise ValueError(f"--hidden-kind: {hidden_kind!r} is not one of {sorted(HIDDEN_KINDS)}")
    if isinstance(save_hidden, str):
        parse_layers(save_hidden)  # syntax errors before the model loads
    if isinstance(model, str | os.PathLike):
        model_name = str(model)
        kwargs = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
        net = transformers.AutoModelForCausalLM.from_pretrained(model_name, **kwargs)
    else:
        net, model_name = model, getattr(getattr(model, "config", None), "name_or_path", "")
    net = net.to(device).eval()  # type: ignore[attr-defined]
    config = net.config.to_dict()
    arch = architecture_of(config)
    rule: RoutingRule = rule_from_config(config, f"{model_name}/config.json")
    names = find_routers([n for n, _ in net.named_modules()], arch)
    modules = dict(net.named_modules())
    routers = [modules[n] for n in names]
    biases = [
        None
        if getattr(r, "e_score_correction_bias", None) is None
        else r.e_score_correction_bias.detach().float().cpu().numpy()
        for r in routers
    ]
    taps = RouterTaps(weights=[r.weight for r in routers])
    ids = _tokenise(prompts, model_name, tokenizer, max_length)
    capture, hidden_modules = None, []
    if save_hidden is not None:
        layers = select_layers(save_hidden, len(names))
        capture = HiddenCapture(layers)
        suffix = HIDDEN_KINDS[hidden_kind]
        if suffix is None:
            taps.consumers.append(capture)
            hidden_modules = [names[i] for i in layers]
        else:
            hidden_modules = [_block_of(names[i]) + suffix for i in layers]
            absent = [m for m in hidden_modules if m not in modules]
            if absent:
                raise ValueError(
                    f"--hidden-kind {hidden_kind}: no module {absent[0]!r} in {model_name}; "
                    "use --hidden-kind router_input"
                )
        d = int(getattr(net.config, "hidden_size", 0) or routers[0].weight.shape[1])
        (log or _stderr)(hidden_size_message(sum(len(c) for c in ids), layers, d))
    handles = [r.register_forward_pre_hook(taps.hook(i)) for i, r in enumerate(routers)]
    if capture is not None and HIDDEN_KINDS[hidden_kind] is not None:
        handles += [
            modules[m].register_forward_hook(capture.output_hook(i))
            for i, m in zip(capture.layers, hidden_modules, strict=True)
        ]
    masks: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(ids), batch_size), desc="record", unit="batch"):
                chunk = ids[start : start + batch_size]
                width = max(len(c) for c in chunk)
                batch = np.zeros((len(chunk), width), dtype=np.int64)
                mask = np.zeros((len(chunk), width), dtype=np.int64)
                for row, c in enumerate(chunk):
                    batch[row, : len(c)] = c
                    mask[row, : len(c)] = 1
                if capture is not None:
                    capture.keep = mask.ravel() != 0
                net(
                    input_ids=torch.from_numpy(batch).to(device),
                    attention_mask=torch.from_numpy(mask).to(device),
                    use_cache=False,
                )
                masks.append(mask.ravel() != 0)
    finally:
        for handle in handles:
            handle.remove()
    keep = np.concatenate(masks)
    logits = [np.concatenate(per_layer)[keep] for per_layer in taps.logits]
    lengths = np.array([len(c) for c in ids])
    domain_names = sorted({p.domain for p in prompts})
    meta = {
        "model": model_name,
        "source": f"gps-trace record ({prompts_name or 'prompts'}), forward pre-hooks on "
        f"{len(names)} routers ({names[0]} ...)",
        "license": "",
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "model_type": arch.model_type,
        "router_modules": names,
        "prompts": prompts_name,
        "batch_size": batch_size,
        "max_length": max_length,
        "device": device,
        "dtype": dtype,
    }
    if capture is not None:
        meta.update(hidden_kind=hidden_kind, hidden_modules=hidden_modules)
    trace = logits_to_trace(
        logits, rule,
        sequence_id=np.repeat(np.arange(len(ids)), lengths),
        position=np.concatenate([np.arange(n) for n in lengths]),
        token_id=np.concatenate([np.asarray(c) for c in ids]),
        biases=biases, origin=model_name, meta=meta,
    )  # fmt: skip
    extra: dict = {}
    if capture is not None:
        extra.update(
            hidden=capture.stack(),
            hidden_layers=np.asarray(capture.layers, dtype=np.int16),
        )
    if domain_names != [""]:
        index = {d: i for i, d in enumerate(domain_names)}
        extra.update(
            domain=np.repeat([index[p.domain] for p in prompts], lengths).astype(np.int16),
            meta={**trace.meta, "domains": domain_names},
        )
    if not extra:
        return trace
    import dataclasses

    return dataclasses.replace(trace, **extra)


def _block_of(router: str) -> str:
    """``model.layers.3.mlp.gate`` -> ``model.layers.3.`` (the decoder block's prefix)."""
    match = _LAYER.search(router)
    assert match is not None  # find_routers checked it
    return router[: match.end()]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _tokenise(
    prompts: Sequence[Prompt], model_name: str, tokenizer: object | None, max_length: int
) -> list[list[int]]:
    """Token ids of every prompt (truncated to ``max_length``)."""
    if any(p.input_ids is None for p in prompts) and tokenizer is None:
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(model_name)
    out = []
    for p in prompts:
        ids = list(p.input_ids) if p.input_ids is not None else tokenizer(p.text)["input_ids"]  # type: ignore[operator]
        out.append([int(i) for i in ids[:max_length]])
    return out


__all__ = [
    "ARCHITECTURES",
    "HIDDEN_KINDS",
    "HiddenCapture",
    "Prompt",
    "RouterTaps",
    "find_routers",
    "hidden_bytes",
    "hidden_size_message",
    "parse_layers",
    "read_prompts",
    "record_routing",
    "select_layers",
]
