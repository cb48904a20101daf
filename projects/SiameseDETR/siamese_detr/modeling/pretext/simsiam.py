"""SimSiam projector / predictor of the global discrimination task L_g (paper Eq. 11, following SimSiam).

Batch norm synchronisation: ``torch.nn.SyncBatchNorm`` refuses CPU tensors (gloo), so the heads use
:class:`SyncBatchNorm1d`, a 1-D view of Detectron2's ``NaiveSyncBatchNorm``. It decides at every
forward pass: with ``comm.get_world_size() > 1`` in training mode it all-reduces the batch mean and
mean of squares (each process weighted equally, like ``stats_mode=""``) so that normalisation and
running statistics are identical on every process; otherwise it is plain ``BatchNorm``. Deciding at
run time (rather than converting at build) keeps one code path for CPU, one GPU and DDP, and a model
built before the process group exists still synchronises once it does.

Per-view statistics: the official heads (``openselfsup/models/heads/siamdetr_head.py``) call the projector
and the predictor once per view, so every BatchNorm normalises each view with that view's own batch
statistics. ``forward(x, num_views=V)`` takes both views in one call, rows view-major (``[V * B, C]``: rows
``v * B .. (v + 1) * B - 1`` are view ``v``), keeps the linear layers batched and computes the BN statistics
per view chunk: the output and the running statistics equal ``V`` successive calls, one per view.
"""

import torch
import torch.distributed as dist
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.layers.batch_norm import differentiable_all_reduce
from detectron2.utils import comm
from torch import Tensor, nn

__all__ = ["SyncBatchNorm1d", "SimSiamProjector", "SimSiamPredictor"]


class SyncBatchNorm1d(NaiveSyncBatchNorm):
    """Batch norm over ``[N, C]`` inputs, synchronised across processes under DDP (see module doc).

    The state dict has the usual BN keys (weight, bias, running_mean, running_var, num_batches_tracked).
    """

    def forward(self, input: Tensor, num_views: int = 1) -> Tensor:  # noqa: A002 (torch's name)
        """Args: ``input`` ``[N, C]``; ``num_views`` V: N = V * B rows, view-major, normalised with each
        view's own batch statistics in training (== V separate calls). Returns ``[N, C]``."""
        if input.dim() != 2:
            raise ValueError(f"SyncBatchNorm1d expects [N, C] inputs, got shape {tuple(input.shape)}")
        if num_views == 1 or not self.training:
            return super().forward(input[:, :, None, None])[:, :, 0, 0]
        if input.shape[0] % num_views:
            raise ValueError(f"{input.shape[0]} rows cannot be split into {num_views} equal views")
        if comm.get_world_size() == 1:
            # plain BatchNorm per chunk, in order: identical to one call per view (incl. running stats
            # and num_batches_tracked); BN is cheap next to the linear layers, which stay batched
            plain = super().forward  # world size 1: nn.BatchNorm2d
            return torch.cat([plain(c[:, :, None, None])[:, :, 0, 0] for c in input.chunk(num_views)])
        return self._synced_per_view(input, num_views)

    def _synced_per_view(self, input: Tensor, num_views: int) -> Tensor:  # noqa: A002
        """NaiveSyncBatchNorm (``stats_mode=""``) semantics per view with ONE all-reduce for all views."""
        # float16 and bfloat16 alike in float32: E[x^2] - E[x]^2 cancels catastrophically in bfloat16
        half = input.dtype not in (torch.float32, torch.float64)
        x = input.float() if half else input
        c = x.shape[1]
        chunks = x.reshape(num_views, -1, c)  # [V, B, C]
        if chunks.shape[1] == 0:
            raise ValueError('SyncBatchNorm(stats_mode="") does not support zero batch size.')
        stats = torch.cat([chunks.mean(dim=1), (chunks * chunks).mean(dim=1)], dim=1)  # [V, 2C]
        stats = differentiable_all_reduce(stats) * (1.0 / dist.get_world_size())
        mean, meansqr = stats[:, :c], stats[:, c:]
        var = meansqr - mean * mean
        scale = self.weight * torch.rsqrt(var + self.eps)  # [V, C]
        bias = self.bias - mean * scale
        out = (chunks * scale[:, None] + bias[:, None]).reshape_as(x)
        with torch.no_grad():  # V successive NaiveSyncBatchNorm updates, in view order
            for v in range(num_views):
                self.running_mean += self.momentum * (mean[v].detach() - self.running_mean)
                self.running_var += self.momentum * (var[v].detach() - self.running_var)
        return out.to(input.dtype) if half else out


class _PerViewSequential(nn.Sequential):
    """``nn.Sequential`` whose ``forward(x, num_views=1)`` passes ``num_views`` to its BN layers."""

    def forward(self, x: Tensor, num_views: int = 1) -> Tensor:
        """``x [V * B, in_dim]`` (rows view-major, ``V = num_views``) -> ``[V * B, out_dim]``."""
        for module in self:
            x = module(x, num_views) if isinstance(module, SyncBatchNorm1d) else module(x)
        return x


class SimSiamProjector(_PerViewSequential):
    """Projector ``FC-BN-ReLU-FC-BN-ReLU-FC-BN``: ``[V * B, in_dim] -> [V * B, out_dim]`` (the three-layer
    MLP of Eq. 11, applied to the pooled context c of each view; as in the official head and SimSiam, its
    output of the other view, not the raw context, is the stop-gradient target).

    The official Siamese DETR configs use 256 -> 256 -> 256 (transformer width) with SyncBN; the multi-scale
    Deformable one takes the three pooled levels, 768 -> 256 -> 256.
    ``forward(x, num_views=V)``: BN statistics per view (see module doc).
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256, out_dim: int = 256):
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            SyncBatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim, bias=False),
            SyncBatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
            SyncBatchNorm1d(out_dim),
        )


class SimSiamPredictor(_PerViewSequential):
    """Predictor ``FC-BN-ReLU-FC``: ``[V * B, in_dim] -> [V * B, out_dim]``; ``forward(x, num_views=V)``.

    The ``pred`` of L_g (Eq. 11 in SimSiam form, :func:`~.losses.global_discrimination_loss`): applied to the
    projection of one view, compared with the stop-gradient projection of the other.
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256, out_dim: int = 256):
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            SyncBatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
