"""Blended Latent Diffusion on SDXL: regenerate a photo's background, keep its subject pixel-exact.

The runner implements the algorithm itself over a diffusers `StableDiffusionXLPipeline`'s components (no
inpaint pipeline): with shrinking and compositing off it reproduces `StableDiffusionXLInpaintPipeline` for a
4-channel UNet step for step. On top of that: a working size of about `working_pixels` with the input's aspect
ratio, an edit mask that keeps only latent cells that are fully subject, progressive mask shrinking, a feathered
composite of the original full-resolution pixels, batches of compatible requests in one UNet batch, progress
callbacks and cancellation.

Reading order of `_run_group` follows diffusers: prompts, timesteps, source latents and noise, masks, time ids,
denoising loop with blending, decode, composite.
"""

from __future__ import annotations

import inspect
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.core.blending import composite, step_edit_masks, subject_alpha
from serving.core.images import ImageInputError, to_rgb_array
from serving.core.sizing import resize_image, working_size

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image

    from serving.models.profiles import ResolvedProfile
    from serving.settings import Settings

MAX_VARIANTS = 8
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_FEATHER = 256
MAX_SEED = 2**63 - 1
# Measured on tiny random weights only (README, "Progressive shrinking"): no seam gain could be shown there, so
# shrinking stays off by default until it is measured on real SDXL weights.
DEFAULT_SHRINK_STEPS = 0

ProgressCallback = Callable[[int, int], None]


class EditOptionsError(ValueError):
    """A caller's mistake in an edit request (bad option, mask or image); the message names the bad value."""


class EditCancelled(RuntimeError):
    """The request's `cancel` event was set before the edit finished."""


@dataclass
class EditRequest:
    """One background edit. `None` options take the runner's defaults (`EditDefaults`).

    image: HxWx3 uint8 RGB array or a PIL image. subject_mask: HxW, True (or nonzero; ≥ 0.5 for floats) =
    subject to keep. seeds: one per variant; or `seed` (variants get seed, seed+1, ...); or neither (random
    seeds, returned in the result). strength: 1.0 starts from noise (a new background); lower keeps the old
    layout. composite=False returns the decoded background alone (for comparisons). progress(step, total) is
    called after every denoising step; setting `cancel` stops the edit with `EditCancelled`.
    """

    image: np.ndarray | Image.Image
    subject_mask: np.ndarray
    prompt: str
    negative_prompt: str | None = None
    seeds: Sequence[int] | None = None
    seed: int | None = None
    variants: int = 1
    steps: int | None = None
    guidance: float | None = None
    strength: float = 1.0
    shrink_steps: int | None = None
    feather: int | None = None
    composite: bool = True
    progress: ProgressCallback | None = field(default=None, repr=False, compare=False)
    cancel: threading.Event | None = field(default=None, repr=False, compare=False)


@dataclass
class EditResult:
    """images: one HxWx3 uint8 array per variant, at the input's size; seeds: the seed of each variant;
    timings: seconds of the whole UNet batch per phase (prepare_s, denoise_s, decode_s, composite_s, total_s),
    steps made and batch_images (images in the UNet batch); working_size: (width, height) the diffusion ran at;
    latents: final latents (variants, 4, h/8, w/8), float32 on the CPU."""

    images: list[np.ndarray]
    seeds: list[int]
    timings: dict[str, float]
    working_size: tuple[int, int]
    latents: torch.Tensor


@dataclass(frozen=True)
class EditDefaults:
    """Options a request leaves as `None`."""

    steps: int = 30
    guidance: float = 7.0
    feather: int = 8
    negative_prompt: str = ""
    shrink_steps: int = DEFAULT_SHRINK_STEPS

    @classmethod
    def from_settings(cls, settings: Settings) -> EditDefaults:
        return cls(
            steps=settings.default_steps,
            guidance=settings.default_guidance,
            feather=settings.default_feather,
            negative_prompt=settings.default_negative_prompt,
        )


@dataclass
class CheckedEdit:
    """A validated request with every option filled in (image as HxWx3 uint8, mask as HxW bool)."""

    image: np.ndarray
    subject_mask: np.ndarray | None  # None only from `check_request(..., require_mask=False)`
    prompt: str
    negative_prompt: str
    seeds: list[int]
    steps: int
    guidance: float
    strength: float
    shrink_steps: int
    feather: int
    composite: bool
    progress: ProgressCallback | None
    cancel: threading.Event | None


def _as_rgb(image: Any) -> np.ndarray:
    try:
        return to_rgb_array(image)
    except ImageInputError as exc:
        raise EditOptionsError(f"image: {exc}") from None


def _as_subject_mask(mask: Any, image_shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        shape = getattr(mask, "shape", type(mask).__name__)
        raise EditOptionsError(f"subject mask must be an HxW array, got {shape}")
    if mask.shape != image_shape[:2]:
        raise EditOptionsError(
            f"subject mask is {mask.shape[1]}×{mask.shape[0]} but the image is {image_shape[1]}×{image_shape[0]}"
        )
    if mask.dtype == bool:
        subject = mask
    elif np.issubdtype(mask.dtype, np.floating):
        subject = mask >= 0.5
    elif np.issubdtype(mask.dtype, np.integer):
        subject = mask > 0
    else:
        raise EditOptionsError(f"subject mask dtype {mask.dtype} is not bool or numeric")
    if not subject.any():
        raise EditOptionsError("subject mask is empty: there is no subject to keep")
    if subject.all():
        raise EditOptionsError("subject mask covers the whole image: there is no background to edit")
    return subject


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise EditOptionsError(f"{name} {value!r} must be an integer from {low} to {high}")
    return int(value)


def _seeds(request: EditRequest) -> list[int]:
    variants = _check_int("variants", request.variants, 1, MAX_VARIANTS)
    if request.seeds is not None:
        if request.seed is not None:
            raise EditOptionsError(f"give seed ({request.seed}) or seeds ({list(request.seeds)}), not both")
        seeds = list(request.seeds)
        if not 1 <= len(seeds) <= MAX_VARIANTS:
            raise EditOptionsError(f"seeds has {len(seeds)} entries; give 1 to {MAX_VARIANTS} (one per variant)")
        if variants not in (1, len(seeds)):
            raise EditOptionsError(f"variants {variants} does not match the {len(seeds)} seeds given")
        return [_check_int("seed", seed, 0, MAX_SEED) for seed in seeds]
    if request.seed is None:
        first = random.SystemRandom().randrange(2**31)
    else:
        first = _check_int("seed", request.seed, 0, MAX_SEED - variants + 1)
    return [first + index for index in range(variants)]


def check_request(request: EditRequest, defaults: EditDefaults | None = None, require_mask: bool = True) -> CheckedEdit:
    """Validate a request and fill in its defaults; raise `EditOptionsError` naming the first bad value.

    `require_mask=False` accepts `subject_mask=None` (the mask comes later from clicks), so every other option can
    be checked before segmenting; the checked edit then has `subject_mask=None`.
    """
    defaults = defaults or EditDefaults()
    image = _as_rgb(request.image)
    if request.subject_mask is None and not require_mask:
        subject_mask = None
    else:
        subject_mask = _as_subject_mask(request.subject_mask, image.shape)
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise EditOptionsError(f"prompt {request.prompt!r} must be non-empty text")
    negative_prompt = defaults.negative_prompt if request.negative_prompt is None else request.negative_prompt
    if not isinstance(negative_prompt, str):
        raise EditOptionsError(f"negative prompt {negative_prompt!r} must be text")
    steps = _check_int("steps", defaults.steps if request.steps is None else request.steps, 1, MAX_STEPS)
    guidance = defaults.guidance if request.guidance is None else request.guidance
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
        raise EditOptionsError(f"guidance {guidance!r} must be a finite number from 0 to {MAX_GUIDANCE:g}")
    strength = request.strength
    if not isinstance(strength, (int, float)) or not math.isfinite(strength) or not 0 < strength <= 1:
        raise EditOptionsError(f"strength {strength!r} must be in (0, 1]")
    if int(steps * strength) < 1:
        raise EditOptionsError(f"strength {strength} with {steps} steps leaves no denoising step")
    shrink = defaults.shrink_steps if request.shrink_steps is None else request.shrink_steps
    shrink_steps = _check_int("shrink_steps", shrink, 0, steps)
    feather = _check_int("feather", defaults.feather if request.feather is None else request.feather, 0, MAX_FEATHER)
    return CheckedEdit(
        image=image,
        subject_mask=subject_mask,
        prompt=request.prompt,
        negative_prompt=negative_prompt,
        seeds=_seeds(request),
        steps=steps,
        guidance=float(guidance),
        strength=float(strength),
        shrink_steps=shrink_steps,
        feather=feather,
        composite=bool(request.composite),
        progress=request.progress,
        cancel=request.cancel,
    )


class BlendedSDXLRunner:
    """Runs background edits on an SDXL pipeline's components. Thread-safe: runs are serialized.

    pipe: a `StableDiffusionXLPipeline` (its scheduler may be any diffusers scheduler); it is moved to `device`
    and `dtype`. In float16 a VAE with `force_upcast` (SDXL's) is kept in float32, so decodes never overflow to
    NaN/black. working_pixels: diffusion area (default: the UNet's native size squared, 1024² for SDXL).
    """

    def __init__(
        self,
        pipe: StableDiffusionXLPipeline,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        working_pixels: int | None = None,
        defaults: EditDefaults | None = None,
    ) -> None:
        import torch

        self.pipe = pipe
        self.device = torch.device(device)
        self.dtype = dtype
        upcast = dtype == torch.float16 and pipe.vae.config.force_upcast
        self.vae_dtype = torch.float32 if upcast else dtype
        for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
            module = getattr(pipe, name, None)
            target = self.vae_dtype if name == "vae" else dtype
            # Only move what is elsewhere: diffusers warns on every dtype cast, even a no-op one.
            if module is not None and (module.device != self.device or module.dtype != target):
                module.to(self.device, target)
        native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.working_pixels = working_pixels or native * native
        self.defaults = defaults or EditDefaults()
        self.profile: ResolvedProfile | None = None
        self.model_name = type(pipe.unet).__name__
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> BlendedSDXLRunner:
        """Build the settings' SDXL profile on the settings' device; `profile` and `model_name` say what runs.

        Working size: `settings.working_pixels`, else the UNet's native area (1024² for SDXL, 512² for tiny)."""
        from serving.models.profiles import resolve_device, resolve_dtype
        from serving.models.sdxl_builders import build_sdxl
        from serving.settings import get_settings

        settings = settings or get_settings()
        pipe, profile, model_name = build_sdxl(settings)
        device = resolve_device(settings)
        runner = cls(
            pipe,
            device,
            resolve_dtype(settings, device),
            working_pixels=settings.working_pixels,
            defaults=EditDefaults.from_settings(settings),
        )
        runner.profile, runner.model_name = profile, model_name
        return runner

    def working_size_for(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the diffusion runs at for an input of this size."""
        return working_size(width, height, self.working_pixels)

    def total_steps(self, steps: int, strength: float = 1.0) -> int:
        """Denoising steps a run makes (what `progress` counts to), given steps and strength."""
        return len(self._timesteps(steps, strength)[1])

    def run(self, request: EditRequest) -> EditResult:
        """One edit. Raises `EditOptionsError` for bad options, `EditCancelled` when cancelled."""
        result = self.run_batch([request], return_exceptions=True)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def run_batch(
        self, requests: Sequence[EditRequest], return_exceptions: bool = False
    ) -> list[EditResult | Exception]:
        """Edits in as few UNet batches as possible; results in the order of `requests`.

        Requests with the same working size, steps, strength and guidance share one UNet batch, each with its own
        prompt, mask and seeds; results equal single runs (up to float rounding of batched matmuls). With
        `return_exceptions`, a bad or cancelled request yields its exception in its place instead of raising.
        """
        import torch

        results: list[EditResult | Exception | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, CheckedEdit]]] = {}
        for index, request in enumerate(requests):
            try:
                edit = check_request(request, self.defaults)
            except EditOptionsError as exc:
                if not return_exceptions:
                    raise
                results[index] = exc
                continue
            size = self.working_size_for(edit.image.shape[1], edit.image.shape[0])
            groups.setdefault((size, edit.steps, edit.strength, edit.guidance), []).append((index, edit))
        with self._lock, torch.inference_mode():
            for (size, *_), members in groups.items():
                group_results = self._run_group([edit for _, edit in members], size)
                for (index, _), result in zip(members, group_results, strict=True):
                    if isinstance(result, Exception) and not return_exceptions:
                        raise result
                    results[index] = result
        return results  # type: ignore[return-value]

    # --- one UNet batch ---------------------------------------------------------------------------------------

    def _timesteps(self, steps: int, strength: float) -> tuple[Any, torch.Tensor]:
        """A private scheduler (runs must not share step state) and its timesteps cut by strength, as diffusers
        does: the first `steps - int(steps * strength)` steps are skipped and `begin_index` marks the start."""
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=self.device)
        t_start = max(steps - min(int(steps * strength), steps), 0)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        return scheduler, scheduler.timesteps[t_start * scheduler.order :]

    def _run_group(self, edits: list[CheckedEdit], size: tuple[int, int]) -> list[EditResult | Exception]:
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        pipe, unet, device, dtype = self.pipe, self.pipe.unet, self.device, self.dtype
        width, height = size
        latent_w, latent_h = width // pipe.vae_scale_factor, height // pipe.vae_scale_factor
        steps, guidance, strength = edits[0].steps, edits[0].guidance, edits[0].strength
        do_cfg = guidance > 1 and unet.config.time_cond_proj_dim is None
        timings: dict[str, float] = {}
        start = time.perf_counter()

        # 1. Prompts.
        prompt_embeds, text_embeds = self._encode_prompts(edits, do_cfg)

        # 2. Timesteps.
        scheduler, timesteps = self._timesteps(steps, strength)

        # 3. Source latents and noise per variant. The VAE encodes each source once; each variant's generator
        # draws the posterior sample first and the noise second (the inpaint pipeline's order of draws).
        generators, sources, noises = [], [], []
        shape = (1, pipe.vae.config.latent_channels, latent_h, latent_w)
        for edit in edits:
            posterior = self._encode_source(resize_image(edit.image, size))
            for seed in edit.seeds:
                generator = torch.Generator("cpu").manual_seed(seed)
                source = posterior.sample(generator).to(dtype)
                sources.append(pipe.vae.config.scaling_factor * source)
                noises.append(randn_tensor(shape, generator=generator, device=device, dtype=dtype))
                generators.append(generator)
        source_latents = torch.cat(sources).contiguous()
        noise = torch.cat(noises)
        if strength == 1.0:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(source_latents, noise, timesteps[:1].repeat(len(noise)))

        # 4. Edit masks (background) at latent size for every step; progressive shrinking dilates the early ones.
        step_masks = self._step_masks(edits, (latent_w, latent_h), len(timesteps))

        # 5. SDXL micro-conditioning: original size = target size = working size, no crop. (Passing a small
        # input's own size would ask SDXL for a low-resolution look.)
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=device)
        time_ids = time_ids.repeat(len(noise) * (2 if do_cfg else 1), 1)
        step_kwargs = self._step_kwargs(scheduler, generators)
        timings["prepare_s"] = time.perf_counter() - start

        # 6. Denoising loop with the blend after every scheduler step.
        start = time.perf_counter()
        cancelled = [False] * len(edits)
        for index, timestep in enumerate(timesteps):
            cancelled = [
                flag or (edit.cancel is not None and edit.cancel.is_set())
                for flag, edit in zip(cancelled, edits, strict=True)
            ]
            if all(cancelled):
                break
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            noise_pred = unet(
                model_input,
                timestep,
                encoder_hidden_states=prompt_embeds,
                added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                return_dict=False,
            )[0]
            if do_cfg:
                noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                noise_pred = noise_pred_uncond + guidance * (noise_pred_text - noise_pred_uncond)
            latents = scheduler.step(noise_pred, timestep, latents, **step_kwargs, return_dict=False)[0]
            # Outside the edit region: the source noised to the *next* timestep (one fixed noise), clean at the end.
            if index < len(timesteps) - 1:
                kept = scheduler.add_noise(source_latents, noise, timesteps[index + 1 : index + 2])
            else:
                kept = source_latents
            edit_mask = step_masks[index]
            latents = (1 - edit_mask) * kept + edit_mask * latents
            for edit in edits:
                if edit.progress is not None:
                    edit.progress(index + 1, len(timesteps))
        timings["denoise_s"] = time.perf_counter() - start
        timings["steps"] = float(len(timesteps))
        timings["batch_images"] = float(len(noise))

        # 7. Decode one image at a time (VAE slicing), 8. composite the original pixels back at full size.
        results: list[EditResult | Exception] = []
        row = 0
        decode_s = composite_s = 0.0
        for edit, was_cancelled in zip(edits, cancelled, strict=True):
            rows = range(row, row + len(edit.seeds))
            row += len(edit.seeds)
            if was_cancelled or (edit.cancel is not None and edit.cancel.is_set()):
                results.append(EditCancelled("edit cancelled"))
                continue
            start = time.perf_counter()
            decoded = [self._decode(latents[index : index + 1]) for index in rows]
            decode_s += time.perf_counter() - start
            start = time.perf_counter()
            images = self._finish(edit, decoded)
            composite_s += time.perf_counter() - start
            results.append(
                EditResult(
                    images=images,
                    seeds=list(edit.seeds),
                    timings={},  # filled in below, once decode and composite times are known
                    working_size=size,
                    latents=latents[rows.start : rows.stop].float().cpu(),
                )
            )
        timings["decode_s"], timings["composite_s"] = decode_s, composite_s
        timings["total_s"] = sum(timings[key] for key in ("prepare_s", "denoise_s", "decode_s", "composite_s"))
        for result in results:
            if isinstance(result, EditResult):
                result.timings = dict(timings)
        return results

    def _encode_prompts(self, edits: list[CheckedEdit], do_cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt and pooled embeddings of the batch, one request at a time (each its own prompt), repeated per
        variant; with classifier-free guidance the negative halves come first, as the UNet batch is laid out."""
        import torch

        positive, negative, pooled, negative_pooled = [], [], [], []
        for edit in edits:
            embeds = self.pipe.encode_prompt(
                edit.prompt,
                device=self.device,
                num_images_per_prompt=len(edit.seeds),
                do_classifier_free_guidance=do_cfg,
                negative_prompt=edit.negative_prompt,
            )
            for store, tensor in zip((positive, negative, pooled, negative_pooled), embeds, strict=True):
                store.append(tensor)
        if not do_cfg:
            return torch.cat(positive), torch.cat(pooled)
        return torch.cat(negative + positive), torch.cat(negative_pooled + pooled)

    def _encode_source(self, image: np.ndarray):
        """The VAE posterior of a working-size HxWx3 uint8 image (diffusers' preprocessing: [-1, 1], NCHW view)."""
        import torch

        vae = self.pipe.vae
        pixels = image.astype(np.float32)[None] / 255.0
        # A transposed view, as diffusers' `numpy_to_pt` makes: the memory layout alone changes conv results.
        tensor = 2.0 * torch.from_numpy(pixels.transpose(0, 3, 1, 2)) - 1.0
        self._set_vae_tiling(image.shape[1], image.shape[0])
        return vae.encode(tensor.to(self.device, self.vae_dtype)).latent_dist

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """(1, 4, h, w) latents -> HxWx3 uint8 at working size."""
        import torch

        vae = self.pipe.vae
        config = vae.config
        latents = latents.to(self.vae_dtype)
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        self._set_vae_tiling(
            latents.shape[-1] * self.pipe.vae_scale_factor, latents.shape[-2] * self.pipe.vae_scale_factor
        )
        image = vae.decode(latents, return_dict=False)[0]
        image = (image * 0.5 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        return (image * 255).round().astype(np.uint8)

    def _set_vae_tiling(self, width: int, height: int) -> None:
        """Tile the VAE beyond 1.5× its native area (4000×3000 photos still work at 1 MP; big working sizes too)."""
        vae = self.pipe.vae
        if width * height > 1.5 * vae.config.sample_size**2:
            vae.enable_tiling()
        else:
            vae.disable_tiling()

    def _step_masks(self, edits: list[CheckedEdit], latent_size: tuple[int, int], total: int) -> list[torch.Tensor]:
        """Per step, the (rows, 1, h, w) edit mask of the batch: 1 = repaint (background), 0 = keep the source."""
        import torch

        per_edit = [step_edit_masks(edit.subject_mask, latent_size, edit.shrink_steps, total) for edit in edits]
        variants = [len(edit.seeds) for edit in edits]
        masks: list[torch.Tensor] = []
        cache: dict[tuple[int, ...], torch.Tensor] = {}  # steps past the shrinking share one tensor
        for step in range(total):
            arrays = [masks_of_edit[step] for masks_of_edit in per_edit]
            key = tuple(id(array) for array in arrays)  # equal radii give the very same array
            if key not in cache:
                rows = [
                    np.repeat(array[None, None], count, axis=0) for array, count in zip(arrays, variants, strict=True)
                ]
                cache[key] = torch.from_numpy(np.concatenate(rows)).to(self.device, self.dtype)
            masks.append(cache[key])
        return masks

    @staticmethod
    def _step_kwargs(scheduler: Any, generators: list[torch.Generator]) -> dict[str, Any]:
        """eta and per-variant generators for schedulers that take them (ancestral, DDIM with eta)."""
        parameters = inspect.signature(scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "eta" in parameters:
            kwargs["eta"] = 0.0
        if "generator" in parameters:
            kwargs["generator"] = generators
        return kwargs

    @staticmethod
    def _finish(edit: CheckedEdit, decoded: list[np.ndarray]) -> list[np.ndarray]:
        """Working-size backgrounds -> input size; with compositing, the original pixels through a feathered alpha."""
        height, width = edit.image.shape[:2]
        backgrounds = [resize_image(image, (width, height)) for image in decoded]
        if not edit.composite:
            return backgrounds
        alpha = subject_alpha(edit.subject_mask, edit.feather)
        return [composite(edit.image, background, alpha) for background in backgrounds]
