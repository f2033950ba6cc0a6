"""Encoders: code packing, the model's encode calls, losses against explicit references."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from crossbit.encoders.codes import hamming_matrix, pack_signs, unpack_codes, validate_bits
from crossbit.encoders.config import ModelConfig
from crossbit.encoders.model import HashModel
from crossbit.encoders.training.losses import (
    bit_balance_loss,
    dcmh_nll,
    info_nce,
    multi_info_nce,
    quantization_loss,
    similarity_distillation,
    triplet_max_violation,
)


@pytest.mark.parametrize("bits", [16, 32, 64, 128, 256])
def test_supported_bits(bits):
    assert validate_bits(bits) == bits


@pytest.mark.parametrize("bits,match", [(12, "multiple of 8"), (0, "multiple of 8"),
                                        (-8, "multiple of 8"), (24, "not supported")])
def test_bad_bits_are_refused(bits, match):
    with pytest.raises(ValueError, match=match):
        validate_bits(bits)
    with pytest.raises(ValueError):
        ModelConfig(bits=bits)


def test_pack_unpack_and_hamming_reference():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(7, 64))
    codes = pack_signs(values)
    assert codes.dtype == np.uint8 and codes.shape == (7, 8)
    assert np.array_equal(unpack_codes(codes), np.where(values > 0, 1.0, -1.0))
    # the first dimension is the most significant bit of byte 0 (FAISS layout)
    assert pack_signs(np.array([[1.0] + [-1.0] * 7]))[0, 0] == 0b10000000
    d = hamming_matrix(codes, codes[:3])
    for i in range(7):
        for j in range(3):
            assert d[i, j] == sum(bin(a ^ b).count("1") for a, b in zip(codes[i], codes[j]))


def test_encode_texts_shapes_order_and_errors(model):
    texts = ["a dog runs on the beach", "two children play football in a park at sunset", "snow"]
    out = model.encode_texts(texts)
    assert out.codes.shape == (3, model.bits // 8) and out.codes.dtype == np.uint8
    assert out.embeddings.shape[0] == 3 and out.embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, atol=1e-5)
    reversed_out = model.encode_texts(texts[::-1])
    assert np.array_equal(reversed_out.codes[::-1], out.codes)  # order restored after sorting
    single = model.encode_texts([texts[1]])
    assert np.array_equal(single.codes[0], out.codes[1])
    empty = model.encode_texts([])
    assert empty.codes.shape == (0, model.bits // 8)
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_texts("a bare string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        model.encode_texts(["ok", 3])


def test_encode_images_accepts_pil_bytes_and_paths(model, photos, tmp_path):
    data = photos["coffee"]
    path = tmp_path / "coffee.jpg"
    path.write_bytes(data)
    pil = Image.open(io.BytesIO(data))
    out = model.encode_images([pil, data, str(path)])
    assert out.codes.shape == (3, model.bits // 8)
    assert (out.codes == out.codes[0]).all()
    with pytest.raises(ValueError, match="not a readable image"):
        model.encode_images([b"definitely not a jpeg"])
    with pytest.raises(FileNotFoundError):
        model.encode_images([str(tmp_path / "missing.jpg")])
    with pytest.raises(TypeError, match="wrap a single image"):
        model.encode_images(data)


def test_onnx_and_torch_give_the_same_codes(model, photos):
    torch_model = HashModel.load()
    torch_model.image_runtime = None
    images = list(photos.values())
    a = model.encode_images(images).codes
    b = torch_model.encode_images(images).codes
    same = np.unpackbits(a) == np.unpackbits(b)
    assert same.mean() >= 0.999, f"only {same.mean():.4f} of bits agree"


def test_checkpoint_round_trip(tmp_path, model):
    model.save(tmp_path / "m")
    again = HashModel.load(tmp_path / "m")
    texts = ["a red bus", "a man on a bike"]
    assert np.array_equal(again.encode_texts(texts).codes, model.encode_texts(texts).codes)
    with pytest.raises(FileNotFoundError, match="not a crossbit model"):
        HashModel.load(tmp_path / "nothing")


def test_resnet18_without_weights_says_random(caplog):
    from crossbit.encoders.backbones import create_backbone, list_backbones

    assert list_backbones() == ["efficientnet-lite0", "resnet18"]
    with caplog.at_level(logging.WARNING):
        net, spec = create_backbone("resnet18")
    assert "RANDOM weights" in caplog.text
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, spec.feature_dim)
    with pytest.raises(ValueError, match="choose one of"):
        create_backbone("vgg99")


def test_text_model_from_a_local_directory():
    from crossbit.encoders.text_models import TextEncoder, resolve_text_model

    directory = resolve_text_model("minilm-l6")
    encoder = TextEncoder(directory)  # any local Hugging Face BERT directory
    assert encoder(["hello"]).shape == (1, encoder.feature_dim)
    with pytest.raises(ValueError, match="unknown text model"):
        resolve_text_model("no-such-model")


def test_triplet_max_violation_against_a_loop():
    torch.manual_seed(0)
    im, tx = torch.randn(5, 8), torch.randn(5, 8)
    margin = 0.3
    a = torch.nn.functional.normalize(im, dim=1)
    b = torch.nn.functional.normalize(tx, dim=1)
    total = 0.0
    for i in range(5):
        pos = float(a[i] @ b[i])
        hardest_text = max(max(0.0, margin - pos + float(a[i] @ b[j])) for j in range(5) if j != i)
        hardest_image = max(max(0.0, margin - pos + float(a[j] @ b[i])) for j in range(5) if j != i)
        total += hardest_text + hardest_image
    assert float(triplet_max_violation(im, tx, margin)) == pytest.approx(total / 5, rel=1e-5)


def test_other_losses():
    torch.manual_seed(1)
    x = torch.randn(6, 4)
    assert float(info_nce(x, x, 0.01)) < float(info_nce(x, torch.randn(6, 4), 0.01))
    assert float(quantization_loss(torch.tensor([[1.0, -1.0]]))) == 0.0
    assert float(quantization_loss(torch.tensor([[0.5, -0.5]]))) == pytest.approx(0.25)
    assert float(bit_balance_loss(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))) == 0.0
    assert float(bit_balance_loss(torch.ones(3, 2))) == 1.0
    f, g = torch.randn(3, 4), torch.randn(2, 4)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    theta = 0.5 * f @ g.T
    expected = float((torch.log1p(torch.exp(theta)) - s * theta).mean())
    assert float(dcmh_nll(f, g, s)) == pytest.approx(expected, rel=1e-5)


def test_onnx_text_runtimes_match_torch():
    from crossbit.encoders.runtime import use_text_runtime

    subjects = ["a dog", "two children", "a man in a red shirt", "a black cat", "people"]
    actions = ["runs on the beach", "plays football in a park", "sits on a bench",
               "jumps over a fence in the snow", "rides a bike down the street"]
    texts = [f"{s} {a}" for s in subjects for a in actions] + ["snow", "a red car"]
    model = HashModel.load()
    use_text_runtime(model, "torch")
    reference = model.encode_texts(texts)
    use_text_runtime(model, "onnx")
    assert model.text_runtime is not None
    fp32 = model.encode_texts(texts)
    same = (np.unpackbits(fp32.codes) == np.unpackbits(reference.codes)).mean()
    assert same >= 0.999, same
    np.testing.assert_allclose(fp32.embeddings, reference.embeddings, atol=1e-4)
    use_text_runtime(model, "int8")
    int8 = model.encode_texts(texts)
    assert (np.unpackbits(int8.codes) == np.unpackbits(reference.codes)).mean() > 0.9
    cosine = (int8.embeddings * reference.embeddings).sum(1)
    assert cosine.mean() > 0.95
    with pytest.raises(ValueError, match="text runtime"):
        use_text_runtime(model, "fp16")
    from crossbit.encoders.runtime import use_image_runtime

    with pytest.raises(ValueError, match="image runtime must be one of"):
        use_image_runtime(model, "int8")  # a text runtime only (was run as ONNX)


def test_onnx_text_tokens_match_transformers_and_threads_agree():
    from concurrent.futures import ThreadPoolExecutor

    from transformers import AutoTokenizer

    from crossbit.encoders.onnx_text import onnx_text_encoder
    from crossbit.encoders.text_models import MAX_TOKENS, resolve_text_model

    encoder = onnx_text_encoder("minilm-l6", "fp32", threads=1)
    texts = ["a dog", "Two children play football, in a park!", "snow " * 300, "", "café ü"]
    ids, mask = encoder.token_ids(texts)
    reference = AutoTokenizer.from_pretrained(resolve_text_model("minilm-l6"))(
        texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="np")
    assert ids.shape[1] == MAX_TOKENS  # the long text is cut
    np.testing.assert_array_equal(ids, reference["input_ids"])
    np.testing.assert_array_equal(mask, reference["attention_mask"])
    batches = [texts[i:] + texts[:i] for i in range(len(texts))] * 4
    alone = [encoder(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:  # one session and tokenizer, called concurrently
        together = list(pool.map(encoder, batches))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_multi_caption_info_nce_against_a_loop():
    torch.manual_seed(2)
    im, tx = torch.randn(3, 5), torch.randn(7, 5)
    owner = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    temp = 0.2
    a = torch.nn.functional.normalize(im, dim=1)
    b = torch.nn.functional.normalize(tx, dim=1)
    sims = (b @ a.t() / temp).tolist()  # sims[text][image]
    t2i = [-(sims[j][owner[j]] - np.log(sum(np.exp(sims[j])))) for j in range(7)]
    i2t = []
    for j in range(7):  # own caption against the other images' captions only
        i = int(owner[j])
        rivals = [sims[k][i] for k in range(7) if int(owner[k]) != i]
        i2t.append(-(sims[j][i] - np.log(np.exp(sims[j][i]) + sum(np.exp(rivals)))))
    expected = 0.5 * (np.mean(t2i) + np.mean(i2t))
    assert float(multi_info_nce(im, tx, owner, temp)) == pytest.approx(expected, rel=1e-5)
    # one caption per image, in order: plain InfoNCE
    square = torch.randn(4, 5)
    assert float(multi_info_nce(im[:3], square[:3], torch.arange(3), temp)) == pytest.approx(
        float(info_nce(im[:3], square[:3], temp)), rel=1e-6)


def test_similarity_distillation():
    torch.manual_seed(3)
    im, tx = torch.randn(6, 8), torch.randn(6, 8)
    # a student that already has the teacher's similarities (same temperature) learns nothing
    assert float(similarity_distillation(im, tx, im, tx, 0.1, 0.1)) == pytest.approx(0, abs=1e-6)
    loss = similarity_distillation(im.requires_grad_(), tx, torch.randn(6, 8), torch.randn(6, 8))
    assert loss.item() > 0
    loss.backward()
    assert im.grad is not None and float(im.grad.abs().sum()) > 0
