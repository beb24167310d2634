"""Weight decay in the shared loop: every parameter but biases and normalisation weights, as HF's Trainer and
MMF decay (issue: the published baselines as published)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from transformers import (
    BertConfig,
    BertModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Trainer,
    VisualBertConfig,
    VisualBertModel,
)

from hatememes.training import decay_parameter_names, parameter_groups

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny_llava() -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=128, **TINY)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=127))


@pytest.mark.parametrize("build", [
    lambda: BertModel(BertConfig(vocab_size=128, **TINY)),
    lambda: VisualBertModel(VisualBertConfig(vocab_size=128, visual_embedding_dim=16, **TINY)),
    tiny_llava,  # Llama's RMSNorm (input_layernorm, norm) and CLIP's pre_layrnorm / post_layernorm
], ids=["bert", "visualbert", "llava"])
def test_the_decayed_parameters_are_hf_trainers(build):
    model = build()
    expected = set(Trainer.get_decay_parameter_names(None, model))  # the method does not read `self`
    assert decay_parameter_names(model) == expected
    assert any("bias" in name for name, _ in model.named_parameters())  # the exclusion had work to do


def test_batch_norm_and_biases_are_not_decayed_in_a_torchvision_resnet():
    model = torchvision.models.resnet18(weights=None)
    decayed = decay_parameter_names(model)
    assert "conv1.weight" in decayed and "fc.weight" in decayed and "layer1.0.conv2.weight" in decayed
    assert not {"bn1.weight", "bn1.bias", "layer1.0.bn2.weight", "fc.bias"} & decayed


def test_an_adamw_step_shrinks_only_the_decayed_weights():
    """With zero gradients, AdamW's decoupled decay alone moves a parameter: by the factor (1 - lr * wd) for the
    decayed ones, not at all for biases and norms; frozen parameters are in no group."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    model[2].weight.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay=0.5), lr=0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 5  # six parameters, one frozen
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["0.weight"], before["0.weight"] * (1 - 0.1 * 0.5))
    for name in ("0.bias", "1.weight", "1.bias", "2.weight", "2.bias"):
        torch.testing.assert_close(after[name], before[name], msg=name)
