"""Tiny random-weight diffusers pipelines (SD1.5, SDXL, SD3, Flux), built offline and saved as diffusers folders.

Each `build_*` seeds torch before every component, so the saved weights are the same on every run, and writes
`pipeline.save_pretrained(folder, safe_serialization=True)`: model_index.json plus one subfolder per component.
The sizes are the smallest that keep each family's wiring (which dim must equal which) intact.
"""

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

SEED = 0
CLIP_MAX_LENGTH = 77  # the CLIP tokenizers pad to this and the text encoders hold that many positions
T5_MAX_LENGTH = 512  # as the real T5 tokenizers; SD3 and Flux pass their own max_sequence_length anyway
CLIP_HIDDEN = 32
CLIP_PROJECTION = 32
WORDS = ("a", "photo", "of", "the", "cat", "dog", "red", "blue", "on", "in", "with")  # merged into whole tokens

# Shared by SD1.5 and SDXL: the "scaled_linear" betas both families were trained with.
SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def _seeded(factory, *args, **kwargs):
    """Seed before each component so that resizing one model leaves the others' weights unchanged."""
    torch.manual_seed(SEED)
    return factory(*args, **kwargs).eval()


def _save(pipeline, folder) -> Path:
    folder = Path(folder)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


# Tokenizers ---------------------------------------------------------------------------------------------------


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right BPE merges that turn `word` into one token; the last symbol carries CLIP's "</w>"."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    merges = []
    while len(symbols) > 1:
        merges.append((symbols[0], symbols[1]))
        symbols = [symbols[0] + symbols[1], *symbols[2:]]
    return merges


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's layout: every byte symbol, then each with "</w>", then merge results, then the two special tokens
    last. Covering all 256 bytes means no text ever maps to the unknown token."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = list(dict.fromkeys(m for word in WORDS for m in _word_merges(word)))
    tokens = alphabet + [s + "</w>" for s in alphabet] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer loaded from a vocab.json + merges.txt written here, as the real ones ship."""
    vocab, merges = _clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as source:
        (Path(source) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
        (Path(source) / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(source, model_max_length=CLIP_MAX_LENGTH)


def _t5_pieces() -> list[tuple[str, float]]:
    """T5's fixed ids (<pad> 0, </s> 1, <unk> 2), then single characters (low score) and a few whole words (high
    score), so Unigram picks whole words when it can and spells anything else out."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    chars = [(chr(c), -10.0) for c in range(33, 127)]
    words = [("▁" + word, -3.0) for word in WORDS]
    return specials + chars + words


def t5_tokenizer() -> T5TokenizerFast:
    """A Unigram tokenizer made with the `tokenizers` library, laid out as transformers rebuilds a T5 tokenizer on
    load (Metaspace pre-tokenizer and decoder, "</s>" appended), so the reloaded one encodes the same."""
    backend = Tokenizer(Unigram(_t5_pieces(), unk_id=2, byte_fallback=False))
    metaspace = {"replacement": "▁", "prepend_scheme": "always", "split": True}
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(**metaspace)]
    )
    backend.decoder = decoders.Metaspace(**metaspace)
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,  # no sentinel tokens: they only matter for T5's span-corruption pretraining
        model_max_length=T5_MAX_LENGTH,
    )


# Text encoders ------------------------------------------------------------------------------------------------


def _clip_config(tokenizer: CLIPTokenizer, hidden: int = CLIP_HIDDEN) -> CLIPTextConfig:
    """eos_token_id must be the tokenizer's: CLIP pools the hidden state at the first end-of-text token."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=CLIP_PROJECTION,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5_encoder(tokenizer: T5TokenizerFast, d_model: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return _seeded(T5EncoderModel, config)


# VAEs ---------------------------------------------------------------------------------------------------------


def _vae(latent_channels: int, scaling_factor: float, shift_factor: float | None = None) -> AutoencoderKL:
    """Two blocks: the pipelines compute vae_scale_factor = 2 ** (blocks - 1) = 2. SD3/Flux VAEs (shift_factor
    set) have no quant convs, as the real ones."""
    flow = shift_factor is not None
    return _seeded(
        AutoencoderKL,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=latent_channels,
        sample_size=16,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=not flow,
        use_post_quant_conv=not flow,
    )


# Families -----------------------------------------------------------------------------------------------------


def build_sd15(folder, prediction_type: str = "epsilon") -> Path:
    """SD1.5 layout: 4 latent channels, one CLIP text encoder whose hidden size is the UNet's cross_attention_dim."""
    tokenizer = clip_tokenizer()
    unet = _seeded(
        UNet2DConditionModel,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CLIP_HIDDEN,
        attention_head_dim=2,  # despite the name, the UNet reads this as the number of heads
    )
    scheduler = DDIMScheduler(
        **SD_BETAS,
        steps_offset=1,
        set_alpha_to_one=False,
        clip_sample=False,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )
    pipeline = StableDiffusionPipeline(
        vae=_vae(4, scaling_factor=0.18215),
        text_encoder=_seeded(CLIPTextModel, _clip_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipeline, folder)


def build_sdxl(folder) -> Path:
    """SDXL layout: the UNet attends to both encoders' penultimate hidden states concatenated (32 + 32 = 64) and
    adds "text_time" embeddings of the 6 size/crop numbers (8 dims each) plus text_encoder_2's pooled projection,
    hence projection_class_embeddings_input_dim = 6 * 8 + 32."""
    tokenizer = clip_tokenizer()
    time_dim = 8
    unet = _seeded(
        UNet2DConditionModel,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * CLIP_HIDDEN,
        attention_head_dim=(2, 4),  # heads per block, as SDXL's (5, 10, 20)
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + CLIP_PROJECTION,
    )
    scheduler = EulerDiscreteScheduler(
        **SD_BETAS,
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type="epsilon",
        use_karras_sigmas=False,
    )
    pipeline = StableDiffusionXLPipeline(
        vae=_vae(4, scaling_factor=0.13025),
        text_encoder=_seeded(CLIPTextModel, _clip_config(tokenizer)),
        text_encoder_2=_seeded(CLIPTextModelWithProjection, _clip_config(tokenizer)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    return _save(pipeline, folder)


SD3_T5_DIM = 80


def build_sd3(folder) -> Path:
    """SD3 layout: 16 latent channels; the two CLIP hidden states are concatenated (32 + 32 = 64) and zero-padded
    to T5's d_model (80, larger as in SD3's 768 + 1280 < 4096) before joining T5's tokens, so joint_attention_dim
    is T5's d_model; pooled_projection_dim is the two CLIP projections together (32 + 32)."""
    tokenizer = clip_tokenizer()
    tokenizer_3 = t5_tokenizer()
    heads, head_dim = 4, 8
    transformer = _seeded(
        SD3Transformer2DModel,
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=SD3_T5_DIM,
        caption_projection_dim=heads * head_dim,  # the text stream joins the image stream's width
        pooled_projection_dim=2 * CLIP_PROJECTION,
        pos_embed_max_size=16,  # positions for up to 16x16 patches (64px images)
    )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=_vae(16, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=_seeded(CLIPTextModelWithProjection, _clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=_seeded(CLIPTextModelWithProjection, _clip_config(tokenizer)),
        tokenizer_2=tokenizer,
        text_encoder_3=_t5_encoder(tokenizer_3, SD3_T5_DIM),
        tokenizer_3=tokenizer_3,
    )
    return _save(pipeline, folder)


FLUX_T5_DIM = 32


def build_flux(folder) -> Path:
    """Flux layout: 16 latent channels packed in 2x2 patches (in_channels 64, patch_size 1); text tokens come from
    T5 alone (joint_attention_dim = T5's d_model) and CLIP gives only its pooled output (pooled_projection_dim =
    CLIP's hidden size). The RoPE axes (4, 6, 6) must sum to attention_head_dim (16)."""
    tokenizer = clip_tokenizer()
    tokenizer_2 = t5_tokenizer()
    latent_channels = 16
    transformer = _seeded(
        FluxTransformer2DModel,
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=FLUX_T5_DIM,
        pooled_projection_dim=CLIP_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    pipeline = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=_vae(latent_channels, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_seeded(CLIPTextModel, _clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, FLUX_T5_DIM),
        tokenizer_2=tokenizer_2,
    )
    return _save(pipeline, folder)
