"""The contrastive degradation encoder: a CNN whose pooled features describe how an LR image
was degraded (blur, noise), learned MoCo-style so that crops of one image agree.

At inference only the query encoder's pooled 256-d features are used; the projection MLP, the
momentum key encoder and the queue of negatives exist for training (and for checkpoint layout).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: (in, out, stride) of the six conv → BatchNorm → LeakyReLU(0.1) stages.
STAGES = ((3, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1))
EMBEDDING = 256


class DegradationEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, stride in STAGES:
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
        self.E = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(
            nn.Linear(EMBEDDING, EMBEDDING), nn.LeakyReLU(0.1), nn.Linear(EMBEDDING, EMBEDDING)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features [B,256], projection [B,256])."""
        features = self.E(x).flatten(1)
        return features, self.mlp(features)


class QueryEncoder(nn.Module):
    """What inference needs of the contrastive encoder: the query encoder alone."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder_q = DegradationEncoder()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The degradation embedding fed to the U-Net: the query encoder's pooled features."""
        return self.encoder_q(x)[0]


class MoCo(QueryEncoder):
    """Momentum contrast: a query and a key encoder, and a queue of negative keys."""

    def __init__(self, queue_size: int = 8192, momentum: float = 0.999, temperature: float = 0.07):
        super().__init__()
        self.momentum, self.temperature = momentum, temperature
        self.encoder_k = DegradationEncoder()
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(EMBEDDING, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def forward(
        self, query: torch.Tensor, key: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training step: (embedding of ``query``, InfoNCE logits, target labels).

        ``query`` and ``key`` are two crops carrying the same degradation; the key's
        projection is the positive, the queue holds keys of earlier batches as negatives.
        """
        embedding, q = self.encoder_q(query)
        q = F.normalize(q, dim=1)
        with torch.no_grad():
            self._momentum_update()
            k = F.normalize(self.encoder_k(key)[1], dim=1)
        positive = (q * k).sum(1, keepdim=True)
        negative = q @ self.queue.clone().detach()
        logits = torch.cat([positive, negative], 1) / self.temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self._enqueue(k)
        return embedding, logits, labels

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[1]
        ptr = int(self.queue_ptr)
        idx = (torch.arange(keys.shape[0], device=keys.device) + ptr) % size
        self.queue[:, idx] = keys.T
        self.queue_ptr[0] = (ptr + keys.shape[0]) % size
