"""Adapters around real libraries and the builders of the three model profiles (`real`, `tiny`, `random-full`):

- segmentation: `sam` (the SAM segmenter), `sam_builders` (SAM for every profile), `salient` (the salient-object
  model on onnxruntime), `salient_weights` (which salient file runs, installing U²-Netp), `subject` (the automatic
  subject and clicks on top of it);
- diffusion: `blended_sdxl` (the blended latent diffusion runner), `sdxl_builders` (SDXL for every profile),
  `sdxl_layouts` and `sdxl_single_file` (the weight layouts users have), `fast_models` (fast mode's few-step
  models), `memory` (the GPU memory plan), `preview_decoder` (live previews), `clip_tokenizer` (CLIP's tokenizer,
  offline);
- prompts: `ollama_stage` (LLaVA's mood keywords, Llama 2's prompt);
- shared: `profiles` (profiles, device, dtype), `weight_files` (checks on single weight files), `weights` (the
  weights report and downloads), `errors` (`WeightsError`).
"""
