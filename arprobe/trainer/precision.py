"""Precision a GPU run gets: TF32 matmuls on CUDA, and a warning when half-precision weights round
their updates away.

- ``use_tf32(cfg, device)``: on CUDA, float32 matmuls and cuDNN convolutions run on TF32 tensor
  cores unless ``model.tf32 = false`` (about 8x the float32 rate of an H100, a 10-bit mantissa in
  the products, float32 accumulation). CPU runs are untouched: their eval matrix stays bit for bit.
- ``LostUpdates``: with bf16 or fp16 *weights* (``model.dtype``), an update smaller than half an ulp
  of the weight rounds back to the weight it started from. At Adam's lr 1e-5, half a bf16 ulp at
  |w| = 0.01 is 3e-5: most of a pretrained model would not train at all. The check measures it on the
  run's first optimizer step (the share of sampled values whose gradient was nonzero that kept their
  value exactly) and warns once, with the number, when the share is ``WARN_SHARE`` or more. Mixed
  precision (``model.autocast = "bfloat16"``: float32 weights and optimizer) has no such loss.
"""

from __future__ import annotations

import warnings

import torch

# A first step that leaves this share of its nonzero-gradient values unchanged is worth a warning.
WARN_SHARE = 0.10
# Values sampled per parameter tensor (evenly strided): a share to about 0.5%, without a copy of the model.
_SAMPLE = 1 << 16


class LostUpdateWarning(UserWarning):
    """Half-precision weights whose optimizer steps round away."""


def use_tf32(cfg, device: torch.device) -> None:
    """TF32 for float32 matmuls and convolutions on CUDA as ``cfg.model.tf32`` says; nothing on CPU."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(cfg.model.tf32)
    torch.backends.cudnn.allow_tf32 = bool(cfg.model.tf32)


def lost_update_share(
    before: list[torch.Tensor], after: list[torch.Tensor], moved: list[torch.Tensor]
) -> float:
    """Of the values whose update was nonzero (``moved``), the share whose value did not change."""
    eligible = sum(int(m.sum()) for m in moved)
    if not eligible:
        return 0.0
    kept = sum(int(((b == a) & m).sum()) for b, a, m in zip(before, after, moved, strict=True))
    return kept / eligible


class LostUpdates:
    """Measures the lost-update share on ``optimizer``'s next step when any of its parameters is
    bf16 or fp16, warns once (``LostUpdateWarning``) when it reaches ``WARN_SHARE``, then detaches.
    ``share`` holds the measured value (None until the step; never set for float32 weights)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, dtype: str):
        self.lr, self.dtype = lr, dtype
        self.share: float | None = None
        self._params = [
            p
            for group in optimizer.param_groups
            for p in group["params"]
            if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)
        ]
        self._before: list[torch.Tensor] = []
        self._moved: list[torch.Tensor] = []
        self._hooks = []
        if self._params:
            self._hooks = [
                optimizer.register_step_pre_hook(self._pre),
                optimizer.register_step_post_hook(self._post),
            ]

    @staticmethod
    def _sample(t: torch.Tensor) -> torch.Tensor:
        flat = t.detach().reshape(-1)
        return flat[:: max(1, flat.numel() // _SAMPLE)].clone()

    def _pre(self, _optimizer, _args, _kwargs) -> None:
        with torch.no_grad():
            self._before = [self._sample(p) for p in self._params]
            self._moved = [
                self._sample(p.grad) != 0 if p.grad is not None else torch.zeros_like(b, dtype=torch.bool)
                for p, b in zip(self._params, self._before, strict=True)
            ]

    def _post(self, _optimizer, _args, _kwargs) -> None:
        self.remove()
        with torch.no_grad():
            after = [self._sample(p) for p in self._params]
        self.share = lost_update_share(self._before, after, self._moved)
        self._before, self._moved = [], []
        if self.share >= WARN_SHARE:
            warnings.warn(self.message(), LostUpdateWarning, stacklevel=2)

    def message(self) -> str:
        return (
            f"{100 * self.share:.0f}% of the weights' updates were lost on the first step: model.dtype "
            f"{self.dtype} rounds an update smaller than half the weight's precision back to the same "
            f"value, and optim.lr {self.lr:g} is that small; train with model.dtype float32 and "
            "model.autocast bfloat16 (bf16 speed, float32 weights), or a larger optim.lr."
        )

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
