"""Pure functions and types, one module per concern:

- `images`: bytes/base64 in (upright RGB, pixel limit before decoding), PNG/base64 out;
- `clicks`: SAM's point prompts and box, checked against the image;
- `masks`: subject masks: clean-up, feathering, the subject check, PNG in/out;
- `saliency`: a salient-object map as a subject mask, SAM's box prompt, clicks that edit the map's regions;
- `matting`: the soft edge: alpha and decontaminated colours in a band, the matte composite, the cut-out;
- `blending`: latent edit masks, progressive shrinking, the composite, the seam score;
- `sizing`: working sizes for diffusion and resizing to and from them;
- `previews`: a picture of SDXL latents without a model;
- `prompt_text`: the prompt stage's text rules (CLIP's 77-token budget, cleaning replies, the template prompt);
- `mood_heuristic`: mood words from image statistics;
- `edit_options`: the table of edit options and their one check;
- `errors`: the kinds of failure every layer raises;
- `wire`: arrays as bytes between the gateway and the stage services.

Nothing here loads a torch model, talks HTTP or imports Streamlit.
"""
