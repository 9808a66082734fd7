"""Compression and deployment of a fine-tuned model: merge, GPTQ, SparseGPT, magnitude and structured
pruning, GKD distillation, and export to safetensors / GGUF (llama.cpp). See docs/compress.md.

Entry points: `pipeline.run_compress(CompressConfig)` (`edgeft compress`) and `export.export_model`
(`edgeft export`); the algorithms live one per module (gptq, sparsegpt, prune, distill).
"""
