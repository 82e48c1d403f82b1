"""Checkpoint files as users have them: bare, prefixed, Lightning-wrapped, LlamaGen-wrapped,
safetensors; decoder and loss weights ignored unless decoding; clear errors otherwise."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from mmtok.errors import MmtokError
from mmtok.models.vq import build_model, load_checkpoint, to_model_input
from mmtok.models.vq.tiny import random_state_dict, synthetic_images, tiny_checkpoint, tiny_config

TAMING = tiny_config()
LLAMAGEN = tiny_config("llamagen")


@pytest.fixture(scope="module")
def states():
    return {c.family: random_state_dict(c, 7) for c in (TAMING, LLAMAGEN)}


def ids_of(model):
    x = to_model_input(torch.from_numpy(synthetic_images(2, 64, seed=3)))
    with torch.inference_mode():
        return model.encode_ids(x)


def reference_ids(config, state):
    model = build_model(config)
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})
    return ids_of(model)


def loaded(config, path, **kw):
    model = build_model(config, decoder=kw.get("decoder", False))
    digest = load_checkpoint(model, path, **kw)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    return model


def with_prefix(state, prefix):
    return OrderedDict((prefix + k, v) for k, v in state.items())


def lpips_weights():
    return {
        "loss.perceptual_loss.net.slice1.0.weight": torch.zeros(64, 3, 3, 3),
        "loss.discriminator.main.0.weight": torch.zeros(64, 3, 4, 4),
    }


@pytest.mark.parametrize(
    "form",
    [
        "bare.pt",
        "bare.safetensors",
        "hf-prefix.safetensors",  # model.vqmodel.encoder... (transformers Chameleon / Anole)
        "hf-shard.safetensors",  # a full Chameleon model's shard: the LLM's tensors beside
        "first-stage.pt",  # first_stage_model. (taming transformer checkpoints)
        "lightning.ckpt",  # {"state_dict": ..., "epoch": ..., "global_step": ...} + loss.*
        "ddp.pth",  # module.
    ],
)
def test_taming_forms_load_to_the_same_ids(tmp_path, states, form):
    state = states["taming"]
    path = tmp_path / form
    if form == "bare.pt":
        torch.save(state, path)
    elif form == "bare.safetensors":
        save_file(state, str(path))
    elif form == "hf-prefix.safetensors":
        save_file(
            with_prefix(
                {k: v for k, v in state.items() if not k.startswith("decoder.")}, "model.vqmodel."
            ),
            str(path),
        )
    elif form == "hf-shard.safetensors":
        llm = {"model.layers.0.self_attn.q_proj.weight": torch.zeros(8, 8)}
        save_file({**llm, **with_prefix(state, "model.vqmodel.")}, str(path))
    elif form == "first-stage.pt":
        torch.save(
            {
                **with_prefix(state, "first_stage_model."),
                "transformer.tok_emb.weight": torch.zeros(4, 4),
            },
            path,
        )
    elif form == "lightning.ckpt":
        torch.save(
            {
                "state_dict": {**state, **lpips_weights()},
                "epoch": 3,
                "global_step": 1000,
                "pytorch-lightning_version": "1.0.8",
            },
            path,
        )
    else:
        torch.save(with_prefix(state, "module."), path)
    assert torch.equal(ids_of(loaded(TAMING, path)), reference_ids(TAMING, state))


def test_llamagen_wrappers_take_ema_before_model(tmp_path, states):
    state = states["llamagen"]
    other = random_state_dict(LLAMAGEN, 8)
    codebook_used = {"quantize.codebook_used": torch.zeros(65536)}  # LlamaGen's buffer
    ema = tmp_path / "vq_ema.pt"
    torch.save(
        {
            "model": {**other, **codebook_used},
            "ema": {**state, **codebook_used},
            "optimizer": {"state": {}, "param_groups": []},
            "steps": 10,
        },
        ema,
    )
    model_only = tmp_path / "vq_ds16_c2i.pt"  # the released file has "model" only (LlamaGen#15)
    torch.save({"model": {**state, **codebook_used}}, model_only)
    expected = reference_ids(LLAMAGEN, state)
    assert torch.equal(ids_of(loaded(LLAMAGEN, ema)), expected)
    assert torch.equal(ids_of(loaded(LLAMAGEN, model_only)), expected)
    assert not torch.equal(expected, reference_ids(LLAMAGEN, other))


def test_decoder_weights_load_only_when_decoding(tmp_path, states):
    path = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=7)
    model = loaded(TAMING, path, decoder=True)
    decoder_weight = states["taming"]["decoder.conv_out.weight"]
    assert torch.equal(model.decoder.conv_out.weight, decoder_weight)
    encoder_only = tmp_path / "encoder-only.pt"
    torch.save(
        {k: v for k, v in states["taming"].items() if not k.startswith("decoder.")}, encoder_only
    )
    loaded(TAMING, encoder_only)  # fine for encoding
    with pytest.raises(MmtokError, match=r"lacks \d+ decoder key\(s\).*decoder\.conv_in\.weight"):
        loaded(TAMING, encoder_only, decoder=True)


def test_missing_encoder_keys_are_named(tmp_path, states):
    state = dict(states["taming"])
    del state["encoder.mid.attn_1.q.weight"], state["quantize.embedding.weight"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(MmtokError) as e:
        loaded(TAMING, path)
    assert "lacks 2 key(s)" in str(e.value)
    assert "encoder.mid.attn_1.q.weight" in str(e.value) and "quantize.embedding.weight" in str(
        e.value
    )


def test_a_llamagen_file_for_a_taming_config_says_what_it_has(tmp_path, states):
    path = tmp_path / "llamagen.pt"
    torch.save({"model": states["llamagen"]}, path)
    with pytest.raises(MmtokError) as e:
        loaded(TAMING, path)
    assert "encoder.down.0.block.0.conv1.weight" in str(e.value)
    assert "(encoder.conv_blocks.*) are those of the llamagen family" in e.value.hint


def test_shape_mismatch_is_named(tmp_path, states):
    path = tmp_path / "big-codebook.pt"
    torch.save(states["taming"], path)
    with pytest.raises(
        MmtokError, match=r"quantize\.embedding\.weight \(64, 32\) in the file, \(128, 32\)"
    ):
        loaded(tiny_config(codebook_size=128), path)


def test_pickled_code_is_refused_not_run(tmp_path, states):
    path = tmp_path / "with-objects.ckpt"
    torch.save({"state_dict": states["taming"], "hparams": MmtokError("an object")}, path)
    with pytest.raises(
        MmtokError, match=r"Python objects besides tensors \(mmtok\.errors\.MmtokError\)"
    ):
        loaded(TAMING, path)


def test_unreadable_and_absent_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MmtokError, match="cannot read checkpoint"):
        loaded(TAMING, junk)
    with pytest.raises(MmtokError, match="not found"):
        load_checkpoint(build_model(TAMING), tmp_path / "absent.safetensors")
