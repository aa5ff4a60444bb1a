"""``gps-trace record`` on tiny randomly initialised MoE models (``make test-record``).

Needs the ``[record]`` extra (torch, transformers); skipped without it, so ``make test``
never downloads torch. The models are built from transformers' own config classes with
random weights and saved to a temporary folder: no download. Each test checks the recorded
experts against the router module's own top-k (its forward output), per architecture.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [record] extra (make test-record)")
transformers = pytest.importorskip(
    "transformers", reason="needs the [record] extra (make test-record)"
)

from gps.traces import load_trace  # noqa: E402
from gps.traces.cli import main as cli_main  # noqa: E402
from gps.traces.record import ARCHITECTURES, find_routers  # noqa: E402

COMMON = dict(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip
CONFIGS = {
    "mixtral": ("MixtralConfig", dict(num_local_experts=8, num_experts_per_tok=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
             shared_expert_intermediate_size=16),
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, head_dim=8),
    ),
    "olmoe": ("OlmoeConfig", dict(num_experts=8, num_experts_per_tok=2)),
    "deepseek_v2": (
        "DeepseekV2Config",
        dict(n_routed_experts=16, num_experts_per_tok=4, moe_intermediate_size=16,
             n_shared_experts=1, first_k_dense_replace=1, topk_method="group_limited_greedy",
             n_group=4, topk_group=2, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
             qk_rope_head_dim=8, v_head_dim=8, head_dim=8),
    ),
    "deepseek_v3": (
        "DeepseekV3Config",
        dict(n_routed_experts=16, num_experts_per_tok=4, moe_intermediate_size=16,
             n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2,
             kv_lora_rank=16, q_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
             v_head_dim=8, head_dim=8),
    ),
}  # fmt: skip


def _tiny_model(model_type: str, folder):
    cls, extra = CONFIGS[model_type]
    kv = {"num_key_value_heads": 4} if model_type.startswith("deepseek") else {}  # MLA: no GQA
    config = getattr(transformers, cls)(**{**COMMON, **kv}, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    if model_type == "deepseek_v3":  # a non-zero correction bias, so its use is checked
        for name, module in model.named_modules():
            if name.endswith(".mlp.gate"):
                module.e_score_correction_bias.copy_(torch.linspace(-0.5, 0.5, 16))
    model.save_pretrained(folder)
    return model


def _own_choices(model, model_type: str, prompts: list[list[int]]) -> list[np.ndarray]:
    """The routers' own top-k per layer (sets of ids), prompt by prompt (no padding)."""
    names = find_routers([n for n, _ in model.named_modules()], ARCHITECTURES[model_type])
    modules = dict(model.named_modules())
    seen: list[list[np.ndarray]] = [[] for _ in names]
    handles = [
        modules[n].register_forward_hook(
            lambda _m, _a, out, i=i: seen[i].append(np.sort(out[2].numpy(), axis=-1))
        )
        for i, n in enumerate(names)
    ]
    with torch.no_grad():
        for ids in prompts:
            model(input_ids=torch.tensor([ids]), use_cache=False)
    for h in handles:
        h.remove()
    return [np.concatenate(per_layer) for per_layer in seen]


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_record_matches_the_routers_own_choice(model_type, tmp_path):
    folder = tmp_path / "model"
    model = _tiny_model(model_type, folder)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 97, size=n).tolist() for n in (7, 12, 5)]
    lines = [
        json.dumps({"input_ids": p, "dataset": d}) for p, d in zip(prompts, "aba", strict=True)
    ]
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "trace.npz"
    argv = ["record", "--model", str(folder), "--prompts", str(tmp_path / "prompts.jsonl"),
            "--batch-size", "2", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    trace = load_trace(out)
    moe_layers = 2 if model_type.startswith("deepseek") else 3  # DeepSeek: layer 0 dense
    assert trace.num_layers == moe_layers and trace.num_tokens == 24
    assert trace.sequence_id.tolist() == [0] * 7 + [1] * 12 + [2] * 5
    assert trace.token_id.tolist() == [i for p in prompts for i in p]
    assert trace.meta["domains"] == ["a", "b"] and trace.meta["model_type"] == model_type
    own = _own_choices(model, model_type, prompts)
    for layer in range(moe_layers):
        assert (np.sort(trace.experts[:, layer], axis=-1) == own[layer]).all(), layer


def test_record_without_moe_layers_is_a_clear_error(tmp_path, capsys):
    config = transformers.LlamaConfig(**COMMON)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "m")
    (tmp_path / "p.jsonl").write_text('{"input_ids": [1, 2, 3]}\n')
    argv = ["record", "--model", str(tmp_path / "m"), "--prompts", str(tmp_path / "p.jsonl"),
            str(tmp_path / "o.npz")]  # fmt: skip
    assert cli_main(argv) == 2
    assert "'model_type': 'llama' is not a supported MoE architecture" in capsys.readouterr().err


def _write_prompts(folder, prompts: list[list[int]]):
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"input_ids": p}) + "\n" for p in prompts))
    return path


def _own_inputs(model, module_names: list[str], prompts: list[list[int]], output: bool):
    """What each named module sees (its input) or gives (its output), prompt by prompt."""
    modules = dict(model.named_modules())
    seen: list[list[np.ndarray]] = [[] for _ in module_names]

    def grab(i):
        if output:
            return lambda _m, _a, out: seen[i].append(out[0].float().numpy())
        return lambda _m, args: seen[i].append(args[0].reshape(-1, args[0].shape[-1]).numpy())

    handles = [
        modules[n].register_forward_hook(grab(i))
        if output
        else modules[n].register_forward_pre_hook(grab(i))
        for i, n in enumerate(module_names)
    ]
    with torch.no_grad():
        for ids in prompts:
            model(input_ids=torch.tensor([ids]), use_cache=False)
    for h in handles:
        h.remove()
    return [np.concatenate(per_module) for per_module in seen]


@pytest.mark.parametrize(("model_type", "spec"), [("mixtral", "all"), ("deepseek_v2", "1")])
def test_save_hidden_stores_pre_attention_normed_activations(model_type, spec, tmp_path, capsys):
    folder = tmp_path / "model"
    model = _tiny_model(model_type, folder)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, 97, size=n).tolist() for n in (7, 12, 5)]
    out = tmp_path / "trace.npz"
    argv = ["record", "--model", str(folder), "--prompts", str(_write_prompts(tmp_path, prompts)),
            "--batch-size", "2", "--save-hidden", spec, str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    layers = [0, 1, 2] if spec == "all" else [1]
    err = capsys.readouterr().err
    assert f"--save-hidden: 24 tokens x {len(layers)} MoE layers" in err
    assert f"= {24 * len(layers) * 32 * 2:,} bytes (" in err  # T * H * d * 2 bytes
    trace = load_trace(out)
    assert trace.hidden.shape == (24, len(layers), 32) and trace.hidden.dtype == np.float16
    assert trace.hidden_layers.tolist() == layers and trace.hidden_layers.dtype == np.int16
    assert trace.meta["hidden_kind"] == "pre_attention_normed"
    # DeepSeek: MoE layer 1 is decoder block 2 (block 0 is dense).
    blocks = [i + 1 for i in layers] if model_type.startswith("deepseek") else layers
    names = [f"model.layers.{b}.input_layernorm" for b in blocks]
    assert trace.meta["hidden_modules"] == names
    own = _own_inputs(model, names, prompts, output=True)  # unpadded, one prompt at a time
    for j in range(len(layers)):
        want = own[j].reshape(-1, 32)
        np.testing.assert_allclose(trace.hidden[:, j], want, rtol=2e-3, atol=2e-3)
        assert np.abs(trace.hidden[:, j].astype(np.float32)).std() > 0.1  # normalised, not 0


def test_save_hidden_router_input_reproduces_the_routing(tmp_path):
    folder = tmp_path / "model"
    model = _tiny_model("qwen3_moe", folder)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(1, 97, size=n).tolist() for n in (9, 4, 11)]
    out = tmp_path / "trace.npz"
    argv = ["record", "--model", str(folder), "--prompts", str(_write_prompts(tmp_path, prompts)),
            "--batch-size", "3", "--save-hidden", "0,2", "--hidden-kind", "router_input",
            str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    trace = load_trace(out)
    assert trace.meta["hidden_kind"] == "router_input"
    assert trace.meta["hidden_modules"] == ["model.layers.0.mlp.gate", "model.layers.2.mlp.gate"]
    assert trace.hidden.shape == (24, 2, 32) and trace.hidden_layers.tolist() == [0, 2]
    own = _own_inputs(model, trace.meta["hidden_modules"], prompts, output=False)
    for j in range(2):
        np.testing.assert_allclose(trace.hidden[:, j], own[j], rtol=2e-3, atol=2e-3)


def test_save_hidden_out_of_range_names_the_option(tmp_path, capsys):
    folder = tmp_path / "model"
    _tiny_model("olmoe", folder)
    argv = ["record", "--model", str(folder), "--prompts",
            str(_write_prompts(tmp_path, [[1, 2, 3]])), "--save-hidden", "2-5",
            str(tmp_path / "o.npz")]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "--save-hidden: MoE layer(s) [3, 4, 5] out of range; the model has 3" in err
    assert not (tmp_path / "o.npz").exists()


def test_hidden_router_trained_on_recorded_activations_beats_popularity(tmp_path):
    """Issue 18's bar: the hidden-state router, trained on a tiny model's recorded
    pre-attention activations, beats the popularity baseline on held-out sequences."""
    from gps.traces.batching import split_by_sequence
    from predictors import make_predictor, topk_hit_rate
    from predictors.token import PopularityTokenPredictor

    folder = tmp_path / "model"
    _tiny_model("mixtral", folder)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(1, 97, size=40).tolist() for _ in range(60)]
    out = tmp_path / "trace.npz"
    argv = ["record", "--model", str(folder), "--prompts", str(_write_prompts(tmp_path, prompts)),
            "--batch-size", "16", "--save-hidden", "all", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    train, test = split_by_sequence(load_trace(out), 0.3, seed=0)
    router = make_predictor("hidden_router").fit(train)
    assert router.coverage_ == [0, 1, 2]
    hidden = topk_hit_rate(router.predict(test), test.experts)
    popular = topk_hit_rate(PopularityTokenPredictor().fit(train).predict(test), test.experts)
    print(f"tiny mixtral, {test.num_tokens} held-out tokens: hidden_router top-2 hit "
          f"{hidden:.3f}, popularity {popular:.3f}")  # fmt: skip
    assert hidden > popular + 0.3, (hidden, popular)
