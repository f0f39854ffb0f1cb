"""A tiny random-weight Stable Diffusion pipeline, built offline for tests.

The components follow diffusers' own test fixtures (see /work/shared/PROVIDERS.md):
a two-block UNet, a two-block VAE, a two-layer CLIP text encoder and a tokenizer
made from a three-entry vocabulary. Weights are random but seeded, so the saved
pipeline is the same on every build. It is written with `save_pretrained`, so a
backend loads it through the real `from_pretrained` path.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SEED = 0


def _tokenizer(folder: Path) -> CLIPTokenizer:
    vocab = folder / "vocab.json"
    merges = folder / "merges.txt"
    vocab.write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}))
    merges.write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab_file=str(vocab), merges_file=str(merges), model_max_length=77)


def build_tiny_pipeline(path: Path) -> Path:
    """Build the tiny pipeline and save it into `path` (created); returns `path`."""
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=8,
            intermediate_size=16,
            layer_norm_eps=1e-05,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=1000,
        )
    )
    # Deterministic (no ancestral noise) and fine with 1-2 steps and img2img strength.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        steps_offset=1,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
    )
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _tokenizer(Path(scratch))
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        path.mkdir(parents=True, exist_ok=True)
        pipe.save_pretrained(path)
    return path
