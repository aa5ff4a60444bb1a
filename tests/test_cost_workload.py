"""Workload validation and token counts."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from gps.workload import Workload, WorkloadError


def test_tokens_per_step():
    assert Workload(phase="prefill", batch_size=3, seq_len=7).tokens_per_step == 21
    assert Workload(phase="decode", batch_size=3, seq_len=7, context_len=9).tokens_per_step == 3
    assert Workload(phase="decode", batch_size=3, context_len=9).kv_len == 9
    assert Workload(phase="prefill", seq_len=5).kv_len == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"phase": "train"}, "phase"),
        ({"attention_parallel": "pp"}, "attention_parallel"),
        ({"batch_size": 0}, "batch_size"),
        ({"seq_len": -1}, "seq_len"),
        ({"context_len": 2.5}, "context_len"),
        ({"batch_size": True}, "batch_size"),
    ],
)
def test_bad_fields_name_the_field(kwargs, field):
    with pytest.raises(WorkloadError, match=rf"workload\.{field}"):
        Workload(**kwargs)


def test_structured_config_accepts_overrides_and_rejects_typos():
    schema = OmegaConf.structured(Workload)
    merged = OmegaConf.merge(schema, {"phase": "decode", "batch_size": 64})
    assert OmegaConf.to_object(merged).tokens_per_step == 64
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(schema, {"batch_sze": 8})
    with pytest.raises(WorkloadError, match=r"workload\.phase"):
        OmegaConf.to_object(OmegaConf.merge(schema, {"phase": "train"}))
