"""SimSiam projector / predictor of the global discrimination task L_g (paper Eq. 11, following SimSiam).

Batch norm synchronisation: ``torch.nn.SyncBatchNorm`` refuses CPU tensors (gloo), so the heads use
:class:`SyncBatchNorm1d`, a 1-D view of Detectron2's ``NaiveSyncBatchNorm``. It decides at every
forward pass: with ``comm.get_world_size() > 1`` in training mode it all-reduces the batch mean and
mean of squares (each process weighted equally, like ``stats_mode=""``) so that normalisation and
running statistics are identical on every process; otherwise it is plain ``BatchNorm``. Deciding at
run time (rather than converting at build) keeps one code path for CPU, one GPU and DDP, and a model
built before the process group exists still synchronises once it does.
"""

from torch import Tensor, nn

from detectron2.layers import NaiveSyncBatchNorm

__all__ = ["SyncBatchNorm1d", "SimSiamProjector", "SimSiamPredictor"]


class SyncBatchNorm1d(NaiveSyncBatchNorm):
    """Batch norm over ``[N, C]`` inputs, synchronised across processes under DDP (see module doc).

    The state dict has the usual BN keys (weight, bias, running_mean, running_var, num_batches_tracked).
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (torch's name)
        if input.dim() != 2:
            raise ValueError(f"SyncBatchNorm1d expects [N, C] inputs, got shape {tuple(input.shape)}")
        return super().forward(input[:, :, None, None])[:, :, 0, 0]


class SimSiamProjector(nn.Sequential):
    """Projector ``FC-BN-ReLU-FC-BN-ReLU-FC-BN``: ``[N, in_dim] -> [N, out_dim]``.

    The official Siamese DETR configs use 256 -> 256 -> 256 (transformer width) with SyncBN.
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


class SimSiamPredictor(nn.Sequential):
    """Predictor ``FC-BN-ReLU-FC``: ``[N, in_dim] -> [N, out_dim]``."""

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256, out_dim: int = 256):
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            SyncBatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
