"""Blended Latent Diffusion on SDXL: regenerate a photo's background, keep its subject pixel-exact.

The runner implements the algorithm itself over a diffusers `StableDiffusionXLPipeline`'s components (no
inpaint pipeline): with shrinking and compositing off it reproduces `StableDiffusionXLInpaintPipeline` for a
4-channel UNet step for step. On top of that: a working size of about `working_pixels` with the input's aspect
ratio, an edit mask that keeps only latent cells that are fully subject, progressive mask shrinking, a feathered
composite of the original full-resolution pixels, batches of compatible requests in one UNet batch, progress
callbacks and cancellation, and two modes: `quality` (the model's own scheduler) and `fast` (a few-step model:
`serving.models.fast_models`), whose weights are switched between UNet batches, never during one.

Reading order of `_run_group` follows diffusers: prompts, timesteps, source latents and noise, masks, time ids,
denoising loop with blending, decode, composite.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.core.blending import compose, step_edit_masks
from serving.core.edit_options import denoising_steps
from serving.core.errors import CancelledError, InputError
from serving.core.images import to_rgb_array
from serving.core.sizing import resize_image, working_size

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image

    from serving.core.edit_options import EditOptions
    from serving.models.fast_models import FastWeights
    from serving.models.memory import OffloadMode
    from serving.models.profiles import ResolvedProfile
    from serving.settings import Settings

ProgressCallback = Callable[[int, int], None]


@dataclass
class DiffusionRequest:
    """One background edit, already checked where it entered (options by `check_edit_options`, the mask by
    `check_subject_mask`): the runner trusts it.

    image: HxWx3 uint8 RGB array or a PIL image. subject_mask: HxW bool, True = subject to keep, at the image's size
    (the composite puts the subject back through it; with composite=False any size does: the latent mask counts
    every pixel of it). composite=False returns the decoded background alone, at the image's size. original_size:
    (width, height) of the photo `image` was resized from, when it was (the working size follows the photo's aspect;
    the caller composites). progress(step, total) is called after every denoising step, and preview(latents) with the
    (4, h, w) latents its first variant is heading for; setting `cancel` stops the edit with `CancelledError`.
    """

    image: np.ndarray | Image.Image
    subject_mask: np.ndarray
    prompt: str
    options: EditOptions
    composite: bool = True
    original_size: tuple[int, int] | None = None
    progress: ProgressCallback | None = field(default=None, repr=False, compare=False)
    preview: Callable[[torch.Tensor], None] | None = field(default=None, repr=False, compare=False)
    cancel: threading.Event | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.image = to_rgb_array(self.image)


@dataclass
class DiffusionResult:
    """images: one HxWx3 uint8 array per variant, at the input's size; seeds: the seed of each variant;
    timings: seconds of the whole UNet batch per phase (prepare_s, denoise_s, decode_s, composite_s, total_s),
    steps made and batch_images (images in the UNet batch); working_size: (width, height) the diffusion ran at;
    latents: final latents (variants, 4, h/8, w/8), float32 on the CPU."""

    images: list[np.ndarray]
    seeds: list[int]
    timings: dict[str, float]
    working_size: tuple[int, int]
    latents: torch.Tensor


class BlendedSDXLRunner:
    """Runs background edits on an SDXL pipeline's components. Thread-safe: runs are serialized.

    pipe: a `StableDiffusionXLPipeline` (its scheduler may be any diffusers scheduler); it is moved to `device`
    and `dtype`. In float16 a VAE with `force_upcast` (SDXL's) is kept in float32, so decodes never overflow to
    NaN/black; an fp16-safe VAE (`force_upcast: false`, e.g. sdxl-vae-fp16-fix) runs in float16. working_pixels:
    diffusion area (default: the UNet's native size squared, 1024² for SDXL). offload: `none` (all on `device`),
    `model` or `sequential` (diffusers' CPU offload onto `device`; see `serving.models.memory`). fast: the few-step
    model attached to `pipe` for `mode=fast` (None: fast edits are refused; `fast_problem` says why).
    """

    def __init__(
        self,
        pipe: StableDiffusionXLPipeline,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        working_pixels: int | None = None,
        offload: OffloadMode = "none",
        fast: FastWeights | None = None,
    ) -> None:
        import torch

        from serving.models.memory import vae_dtype_for

        self.pipe = pipe
        self.dtype = dtype
        self.vae_dtype = vae_dtype_for(dtype, pipe.vae.config.force_upcast)
        self.offload = offload
        device = torch.device(device)
        for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
            module = getattr(pipe, name, None)
            if module is None:
                continue
            target = self.vae_dtype if name == "vae" else dtype
            # With offload the models stay where they are (the CPU), in their dtype, and accelerate's hooks bring
            # each to the GPU when it runs. Only move what is elsewhere: diffusers warns on every cast, even a no-op.
            place = device if offload == "none" else module.device
            if module.device != place or module.dtype != target:
                module.to(place, target)
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        # Where the runner puts its own tensors (latents, masks, time ids): the GPU the hooks run the models on.
        self.device = device if offload == "none" else pipe._execution_device
        native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.working_pixels = working_pixels or native * native
        self.profile: ResolvedProfile | None = None
        self.model_name = type(pipe.unet).__name__
        self.offload_reason = f"offload={offload}, set by the caller"
        self.fast = fast
        self.fast_problem: str | None = None if fast else "no few-step model was given to the runner"
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> BlendedSDXLRunner:
        """Build the settings' SDXL profile on the settings' device and dtype, in the memory mode `plan_offload` picks
        (MOODSHIFT_OFFLOAD); `profile`, `model_name`, `offload` and `offload_reason` say what runs and why.

        Working size: `settings.working_pixels`, else the UNet's native area (1024² for SDXL, 512² for tiny). Fast
        mode: the few-step file of MOODSHIFT_FAST_MODEL (real), a stand-in (tiny, random-full), or none and why
        (`fast_problem`)."""
        from serving.models.fast_models import load_fast_weights
        from serving.models.memory import pipeline_model_bytes, plan_offload, with_fast_model
        from serving.models.profiles import resolve_device, resolve_dtype
        from serving.models.sdxl_builders import build_sdxl
        from serving.settings import get_settings

        settings = settings or get_settings()
        device = resolve_device(settings)
        dtype = resolve_dtype(settings, device)
        pipe, profile, model_name = build_sdxl(settings, dtype)
        model_bytes = pipeline_model_bytes(pipe, dtype)
        if profile.profile == "real":  # the file's LoRA; the other profiles attach a stand-in instead
            model_bytes = with_fast_model(settings, model_bytes, dtype)
        plan = plan_offload(settings, device, dtype, model_bytes, settings.working_pixels)
        runner = cls(pipe, device, dtype, working_pixels=settings.working_pixels, offload=plan.offload)
        runner.profile, runner.model_name, runner.offload_reason = profile, model_name, plan.reason
        runner.fast, runner.fast_problem = load_fast_weights(settings, pipe, profile.profile, plan.offload)
        return runner

    def describe_fast(self) -> dict[str, Any]:
        """The few-step model of fast mode as `GET /info`'s `fast` says it, or why there is none."""
        from serving.models.fast_models import unavailable

        return self.fast.describe() if self.fast is not None else unavailable(self.fast_problem or "")

    @property
    def weights_mode(self) -> str:
        """The mode the UNet's weights are in now (`quality` until a fast edit ran)."""
        return self.fast.mode if self.fast is not None else "quality"

    def use_mode(self, mode: str) -> None:
        """Put the weights in `mode`'s state, between runs (what `run_batch` does before each UNet batch).
        `InputError` for fast mode without a few-step model."""
        with self._lock:
            self._use_mode(mode)

    def _use_mode(self, mode: str) -> None:
        if self.fast is None:
            if mode == "fast":  # the entrance refuses this first; a caller that skipped it learns why here
                raise InputError(f"mode fast is not available: {self.fast_problem}")
            return
        self.fast.use(mode)

    def working_size_for(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the diffusion runs at for an input of this size."""
        return working_size(width, height, self.working_pixels)

    def run(self, request: DiffusionRequest) -> DiffusionResult:
        """One edit. Raises `CancelledError` when cancelled."""
        result = self.run_batch([request], return_exceptions=True)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def run_batch(
        self, requests: Sequence[DiffusionRequest], return_exceptions: bool = False
    ) -> list[DiffusionResult | Exception]:
        """Edits in as few UNet batches as possible; results in the order of `requests`.

        Requests with the same working size, mode, steps, strength and guidance share one UNet batch, each with its
        own prompt, mask and seeds; results equal single runs (up to float rounding of batched matmuls). Batches in
        the mode the weights are in run first, so a call holding both modes switches the weights once. With
        `return_exceptions`, a cancelled request yields its `CancelledError` in its place instead of raising.
        """
        import torch

        results: list[DiffusionResult | Exception | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, DiffusionRequest]]] = {}
        for index, request in enumerate(requests):
            options = request.options
            size = self.working_size_for(*(request.original_size or request.image.shape[1::-1]))
            key = (size, options.mode, options.steps, options.strength, options.guidance)
            groups.setdefault(key, []).append((index, request))
        with self._lock:
            current = self.weights_mode
            for (size, mode, *_), members in sorted(groups.items(), key=lambda group: group[0][1] != current):
                self._use_mode(mode)  # outside inference mode: switched weights stay ordinary tensors
                with torch.inference_mode():
                    group_results = self._run_group([request for _, request in members], size)
                for (index, _), result in zip(members, group_results, strict=True):
                    if isinstance(result, Exception) and not return_exceptions:
                        raise result
                    results[index] = result
        return results  # type: ignore[return-value]

    # --- one UNet batch ---------------------------------------------------------------------------------------

    def new_scheduler(self, mode: str) -> Any:
        """A private scheduler for `mode` (runs must not share step state): the model's own for quality, the
        few-step model's (its class and card settings over the model's config) for fast."""
        if mode == "fast" and self.fast is not None:
            return self.fast.scheduler(self.pipe.scheduler.config)
        return type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)

    def _timesteps(self, steps: int, strength: float, mode: str = "quality") -> tuple[Any, torch.Tensor]:
        """A private scheduler and its timesteps cut by strength, as diffusers does: the steps before the last
        `denoising_steps(steps, strength)` are skipped and `begin_index` marks the start."""
        scheduler = self.new_scheduler(mode)
        scheduler.set_timesteps(steps, device=self.device)
        t_start = steps - denoising_steps(steps, strength)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        return scheduler, scheduler.timesteps[t_start * scheduler.order :]

    def _run_group(self, edits: list[DiffusionRequest], size: tuple[int, int]) -> list[DiffusionResult | Exception]:
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        pipe, unet, device, dtype = self.pipe, self.pipe.unet, self.device, self.dtype
        width, height = size
        latent_w, latent_h = width // pipe.vae_scale_factor, height // pipe.vae_scale_factor
        options = edits[0].options  # the group's shared options
        steps, guidance, strength, mode = options.steps, options.guidance, options.strength, options.mode
        do_cfg = guidance > 1 and unet.config.time_cond_proj_dim is None
        timings: dict[str, float] = {}
        start = time.perf_counter()

        # 1. Prompts.
        prompt_embeds, text_embeds = self._encode_prompts(edits, do_cfg)

        # 2. Timesteps.
        scheduler, timesteps = self._timesteps(steps, strength, mode)

        # 3. Source latents and noise per variant. The VAE encodes each source once; each variant's generator
        # draws as the inpaint pipeline's does: the posterior sample, the noise, then a sample of the masked image's
        # posterior, which a 4-channel UNet never uses but which moves the generator on before a stochastic
        # scheduler (LCM, TCD) draws its step noise from it.
        generators, sources, noises = [], [], []
        shape = (1, pipe.vae.config.latent_channels, latent_h, latent_w)
        for edit in edits:
            posterior = self._encode_source(resize_image(edit.image, size))
            for seed in edit.options.seeds:
                generator = torch.Generator("cpu").manual_seed(seed)
                source = posterior.sample(generator).to(dtype)
                sources.append(pipe.vae.config.scaling_factor * source)
                noises.append(randn_tensor(shape, generator=generator, device=device, dtype=dtype))
                randn_tensor(posterior.mean.shape, generator=generator, dtype=posterior.mean.dtype)
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
        eta = self.fast.family.eta if mode == "fast" and self.fast is not None else 0.0
        step_kwargs = self._step_kwargs(scheduler, generators, eta)
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
            stepped = scheduler.step(noise_pred, timestep, latents, **step_kwargs, return_dict=False)
            latents = stepped[0]
            # Outside the edit region: the source noised to the *next* timestep (one fixed noise), clean at the end.
            if index < len(timesteps) - 1:
                kept = scheduler.add_noise(source_latents, noise, timesteps[index + 1 : index + 2])
            else:
                kept = source_latents
            edit_mask = step_masks[index]
            latents = (1 - edit_mask) * kept + edit_mask * latents
            self._report_step(edits, index + 1, len(timesteps), stepped, latents, source_latents, edit_mask)
        timings["denoise_s"] = time.perf_counter() - start
        timings["steps"] = float(len(timesteps))
        timings["batch_images"] = float(len(noise))

        # 7. Decode one image at a time (VAE slicing), 8. composite the original pixels back at full size.
        results: list[DiffusionResult | Exception] = []
        row = 0
        decode_s = composite_s = 0.0
        for edit, was_cancelled in zip(edits, cancelled, strict=True):
            rows = range(row, row + edit.options.variants)
            row += edit.options.variants
            if was_cancelled or (edit.cancel is not None and edit.cancel.is_set()):
                results.append(CancelledError("edit cancelled"))
                continue
            start = time.perf_counter()
            decoded = [self._decode(latents[index : index + 1]) for index in rows]
            decode_s += time.perf_counter() - start
            start = time.perf_counter()
            images = self._finish(edit, decoded)
            composite_s += time.perf_counter() - start
            results.append(
                DiffusionResult(
                    images=images,
                    seeds=edit.options.seeds,
                    timings={},  # filled in below, once decode and composite times are known
                    working_size=size,
                    latents=latents[rows.start : rows.stop].float().cpu(),
                )
            )
        timings["decode_s"], timings["composite_s"] = decode_s, composite_s
        timings["total_s"] = sum(timings[key] for key in ("prepare_s", "denoise_s", "decode_s", "composite_s"))
        for result in results:
            if isinstance(result, DiffusionResult):
                result.timings = dict(timings)
        return results

    @staticmethod
    def _report_step(
        edits: list[DiffusionRequest],
        step: int,
        total: int,
        stepped: tuple,
        latents: torch.Tensor,
        source_latents: torch.Tensor,
        edit_mask: torch.Tensor,
    ) -> None:
        """Tell each request its step and, when it wants previews, the picture its first variant is heading for:
        the scheduler's prediction of the clean latents (where it gives one) in the edit region, the source
        elsewhere."""
        row = 0
        for edit in edits:
            if edit.progress is not None:
                edit.progress(step, total)
            if edit.preview is not None:
                heading = stepped[1] if len(stepped) > 1 and stepped[1] is not None else latents
                mask = edit_mask[row]
                edit.preview((mask * heading[row] + (1 - mask) * source_latents[row]).detach())
            row += edit.options.variants

    def _encode_prompts(self, edits: list[DiffusionRequest], do_cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt and pooled embeddings of the batch, one request at a time (each its own prompt), repeated per
        variant; with classifier-free guidance the negative halves come first, as the UNet batch is laid out."""
        import torch

        positive, negative, pooled, negative_pooled = [], [], [], []
        for edit in edits:
            embeds = self.pipe.encode_prompt(
                edit.prompt,
                device=self.device,
                num_images_per_prompt=edit.options.variants,
                do_classifier_free_guidance=do_cfg,
                negative_prompt=edit.options.negative_prompt,
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

    def _step_masks(
        self, edits: list[DiffusionRequest], latent_size: tuple[int, int], total: int
    ) -> list[torch.Tensor]:
        """Per step, the (rows, 1, h, w) edit mask of the batch: 1 = repaint (background), 0 = keep the source."""
        import torch

        per_edit = [step_edit_masks(edit.subject_mask, latent_size, edit.options.shrink_steps, total) for edit in edits]
        variants = [edit.options.variants for edit in edits]
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
    def _step_kwargs(scheduler: Any, generators: list[torch.Generator], eta: float = 0.0) -> dict[str, Any]:
        """eta and per-variant generators for schedulers that take them (ancestral, DDIM, LCM, TCD)."""
        parameters = inspect.signature(scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "eta" in parameters:
            kwargs["eta"] = eta
        if "generator" in parameters:
            kwargs["generator"] = generators
        return kwargs

    @staticmethod
    def _finish(edit: DiffusionRequest, decoded: list[np.ndarray]) -> list[np.ndarray]:
        """Working-size backgrounds -> the image's size; with compositing, its subject put back (`compose`)."""
        if edit.composite:
            return [compose(edit.image, background, edit.subject_mask, edit.options.feather) for background in decoded]
        height, width = edit.image.shape[:2]
        return [resize_image(background, (width, height)) for background in decoded]
