"""How much the fill's precision changes what PAC caches: int8 codes of a TF32 or bf16 fill against an fp32 fill.

PAC's fill stores every tapped activation as int8 with one scale per (row, tap) vector, so a fill computed with
TF32 products (10-bit mantissas) or in bf16 can only change what the side network sees where it moves a value
across a quantisation step. This fills the cache of the same sentences once per `fill_precision` (same random
backbone, same samples) and counts, against the fp32 fill, the codes that are equal, one step apart, or further,
and the dequantised values' relative error next to the int8 step itself (docs/benchmarks_pac.md, "the fill's
precision"). CUDA only (elsewhere every choice is the run's fp32).

  python bench/fill_agreement.py --model <smollm2 tokenizer folder> --train-samples 1000 --out agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> dict:
    import torch
    from frozen_forward import add_data_args, random_setup
    from pac_vs_baselines import random_backbone

    from edgeft.methods import get_method
    from edgeft.methods.pac import codec
    from edgeft.methods.pac.model import _feature_hash

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_args(p)
    p.add_argument("--choices", nargs="+", default=["tf32", "bf16"])
    p.add_argument("--out", default=None)
    p.set_defaults(train_samples=1000)
    args = p.parse_args(argv)
    device, task, bb, feat, feats = random_setup(args)
    ids, hashes = [str(f["id"]) for f in feats], [_feature_hash(f) for f in feats]

    def filled(choice: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sample's int8 codes and fp32 scales, one row after another, from a fill at `choice`."""
        method = get_method("pac", {"fill_precision": choice, "device_cache": "off"})  # the fill alone
        fresh = random_backbone(args.random_llama, args.model, args.seed, device)  # the same weights, untouched
        model = method.place(method.prepare(fresh, task), device)
        model.fill_cache(feats, feat.collate)
        found = model.cache.lookup(ids, hashes)
        data, scale = codec.from_payloads([f[0] for f in found], [f[1] for f in found], len(model.taps),
                                          model.side.hidden, "int8")
        return data.long().reshape(-1), scale.reshape(-1)

    ref_codes, ref_scales = filled("run")
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
           "torch": torch.__version__, "backbone": f"random-llama-{args.random_llama}", "sentences": len(feats),
           "values": int(ref_codes.numel()), "against": "fill_precision=run (fp32)", "choices": {}}
    for choice in args.choices:
        codes, scales = filled(choice)
        diff = (codes - ref_codes).abs()
        per = ref_codes.numel() // ref_scales.numel()  # values per scale (the hidden size)
        ref_values = ref_codes.float().view(-1, per) * ref_scales.view(-1, 1)
        values = codes.float().view(-1, per) * scales.view(-1, 1)
        row = {"codes_equal": float((diff == 0).float().mean()), "codes_one_step": float((diff == 1).float().mean()),
               "codes_further": float((diff > 1).float().mean()), "max_code_step": int(diff.max()),
               "relative_error": float((values - ref_values).norm() / ref_values.norm()),
               # what int8 rounding itself costs (a uniform error of +-half a step): the yardstick for the above
               "int8_rounding_relative": float((ref_scales.square().sum() * per / 12).sqrt() / ref_values.norm()),
               "scales_relative_error": float(((scales - ref_scales).abs() / ref_scales.clamp_min(1e-12)).max())}
        out["choices"][choice] = row
        print(choice, json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
