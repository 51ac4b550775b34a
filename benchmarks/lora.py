"""What core/apply_lora costs on an SD 1.5-sized U-Net: new memory (the adapted weights only) and time.

Builds the U-Net of SD 1.5's config (860 M parameters, random weights, no download) in `--dtype`, a random
rank `--rank` LoRA over every layer of its transformer blocks (attention q/k/v/out, feed-forward,
proj_in/out, the usual kohya targets), applies it as the node does (W' = W + s alpha/r B A on a copy-on-write
twin), and reports the parameters and bytes of the adapted weights against the whole model, the seconds to
apply, and that the base's weights are unchanged.
Run: python -m benchmarks lora -- --rank 16 --dtype float16
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

SD15_UNET = {"cross_attention_dim": 768, "attention_head_dim": 8, "sample_size": 64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float16")
    return parser.parse_args(argv)


def main() -> None:
    from diffusers import UNet2DConditionModel

    from nodes.families.lora import adapted_parameters, with_parameters
    from nodes.families.lora_file import LoraLayer

    args = parse_args()
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    unet = UNet2DConditionModel(**SD15_UNET).to(dtype).requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    layers = {}
    for name, module in unet.named_modules():
        if ".transformer_blocks." in name or name.endswith(("proj_in", "proj_out")):
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                out_features, in_features = module.weight.shape[:2]
                layers[name] = LoraLayer(torch.randn(args.rank, in_features, generator=generator) * 0.01,
                                         torch.randn(out_features, args.rank, generator=generator) * 0.01, 1.0)
    checksum = sum(float(p.float().sum()) for p in unet.parameters())
    started = time.perf_counter()
    values = adapted_parameters(unet, "", "unet", layers, 1.0, [])
    twin = with_parameters(unet, values)
    seconds = time.perf_counter() - started
    total = sum(p.numel() for p in unet.parameters())
    adapted = sum(v.numel() for v in values.values())
    size = torch.finfo(dtype).bits // 8
    shared = sum(1 for (_, a), (_, b) in zip(unet.named_parameters(), twin.named_parameters(), strict=True) if a is b)
    unchanged = sum(float(p.float().sum()) for p in unet.parameters()) == checksum
    print(f"U-Net (SD 1.5 config, {args.dtype}): {total / 1e6:.1f} M parameters, {total * size / 2**20:.0f} MiB")
    print(f"LoRA rank {args.rank} on {len(layers)} layers: adapted weights {adapted / 1e6:.1f} M parameters "
          f"({100 * adapted / total:.1f} %), {adapted * size / 2**20:.0f} MiB new; "
          f"{shared} of {len(list(unet.parameters()))} parameter tensors shared with the base")
    print(f"apply: {seconds:.2f} s on {torch.get_num_threads()} CPU threads; base unchanged: {unchanged}")


if __name__ == "__main__":
    main()
