"""The parameter table of ``docs/models.md``: every ``conf/model/*.yaml``, its dimensions and
its computed (``gps.model.total_params`` / ``active_params``) against its published parameter
counts. ``conf/model/hf.yaml`` (any Hugging Face ``config.json``, ``gps model=hf``) has no
dimensions of its own and is left out.

Run: ``.venv/bin/python benchmarks/model_table.py`` (prints the Markdown table; no timing).
"""

from __future__ import annotations

import yaml

from gps.model import (
    MODEL_CONF_DIR,
    MoEModelSpec,
    active_params,
    load_model_spec,
    moe_layer_indices,
    total_params,
)


def _vs(computed: float, published: float) -> str:
    """``15.71B / 15.7B (+0.0%)``."""
    return f"{computed / 1e9:.2f}B / {published / 1e9:g}B ({computed / published - 1:+.1%})"


def row(name: str, spec: MoEModelSpec) -> str:
    att = spec.attention
    attention = (
        f"MLA r={att.kv_lora_rank}" if att.kind == "mla"
        else f"GQA {att.num_heads}/{att.num_kv_heads}"
    )  # fmt: skip
    active = active_params(
        spec, include_input_embedding=not spec.published_active_excludes_input_embedding
    )
    cells = [
        f"`{name}`", spec.name, f"{spec.num_layers} ({len(moe_layer_indices(spec))})",
        str(spec.hidden_size), f"{spec.num_experts} (+{spec.num_shared_experts})",
        str(spec.top_k), str(spec.expert_intermediate_size), attention,
        _vs(total_params(spec), spec.published_total_params),
        _vs(active, spec.published_active_params),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    header = ["config", "model", "layers (MoE)", "d", "experts (+shared)", "top-k",
              "expert FFN", "attention", "total: computed / published",
              "active: computed / published"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for path in sorted(MODEL_CONF_DIR.glob("*.yaml")):
        if "config_json" not in yaml.safe_load(path.read_text()):
            print(row(path.stem, load_model_spec(path.stem)))


if __name__ == "__main__":
    main()
