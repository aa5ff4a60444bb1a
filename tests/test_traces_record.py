"""Torch-free parts of ``gps-trace record --save-hidden``: the LAYERS syntax, the layer
selection and the size estimate (``make test``; the recording itself is in
``tests/test_traces_record_torch.py``)."""

from __future__ import annotations

import pytest

from gps.traces.cli import main as cli_main
from gps.traces.record import hidden_bytes, hidden_size_message, parse_layers, select_layers


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", None),
        (" ALL ", None),
        ("0,3,5", (0, 3, 5)),
        ("5,0,3,3", (0, 3, 5)),
        ("0-7", tuple(range(8))),
        ("0-2, 5", (0, 1, 2, 5)),
        ("4-4", (4,)),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("1,,2", "'' in '1,,2' is not a layer index or range"),
        ("a", "'a' in 'a' is not a layer index"),
        ("-1", "'-1' in '-1' is not a layer index"),
        ("1.5", "'1.5'"),
        ("7-3", "range '7-3' runs backwards"),
    ],
)
def test_parse_layers_rejects_bad_syntax_naming_the_option(spec, message):
    with pytest.raises(ValueError, match="--save-hidden") as err:
        parse_layers(spec)
    assert message in str(err.value)


def test_select_layers_checks_the_range():
    assert select_layers("all", 3) == [0, 1, 2]
    assert select_layers("0-2", 3) == [0, 1, 2]
    assert select_layers([2, 0], 3) == [0, 2]
    assert select_layers(None, 2) == [0, 1]
    with pytest.raises(ValueError, match=r"--save-hidden: MoE layer\(s\) \[3, 4\] out of range"):
        select_layers("0,3-4", 3)
    with pytest.raises(ValueError, match="--save-hidden"):
        select_layers([], 3)


def test_size_estimate_is_t_h_d_times_two_bytes():
    # DeepSeek-V2-Lite, d = 2048 (its config.json hidden_size): 100,000 tokens x 4 layers
    # -> 100000 * 4 * 2048 * 2 = 1,638,400,000 bytes = 1.526 GiB.
    assert hidden_bytes(100_000, 4, 2048) == 1_638_400_000
    assert hidden_bytes(24, 3, 32) == 4608
    msg = hidden_size_message(100_000, [0, 3, 5, 7], 2048)
    assert "100000 tokens x 4 MoE layers [0,3,5,7] x d=2048 x 2 bytes (float16)" in msg
    assert msg.endswith("= 1,638,400,000 bytes (1.53 GiB) in memory and in the trace")
    assert "= 4,608 bytes (4.5 KiB)" in hidden_size_message(24, [0, 1, 2], 32)
    assert "[0,1,...,26]" in hidden_size_message(10, list(range(27)), 8)


def test_cli_bad_save_hidden_is_a_clear_error_before_anything_loads(tmp_path, capsys):
    # No prompts file, no model, no torch needed: the option is checked first.
    argv = ["record", "--model", str(tmp_path / "none"), "--prompts", str(tmp_path / "p.txt"),
            "--save-hidden", "0-x", str(tmp_path / "o.npz")]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "gps-trace: error: --save-hidden: '0-x' in '0-x' is not a layer index" in err
    assert not (tmp_path / "o.npz").exists()
