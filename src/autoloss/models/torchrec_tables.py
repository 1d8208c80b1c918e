"""Field embeddings held in TorchRec tables, one per field, which ``DistributedModelParallel``
shards across the processes of a run (``train.embeddings=sharded``, docs/distributed.md).

:class:`TorchRecFieldEmbedding` computes what :class:`~autoloss.models.layers.FieldEmbedding`
computes, (B, F, D) from the same inputs: a categorical field is a bag of one id (SUM pooling of
one row is the row), a multi-valued field a bag of its ids with MEAN pooling (an all-padding bag
gives zeros), a dense field its value times a learnt vector. The tables are created on the meta
device: they take memory only once sharded, each on the process that owns it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec

#: How to install what the sharded tables need (TorchRec's wheel names an fbgemm-gpu it must not
#: pull in on a CPU machine, hence --no-deps).
TORCHREC_HINT = "pip install 'autoloss-rec[torchrec]' && pip install --no-deps torchrec==1.8.0"


class TorchRecFieldEmbedding(nn.Module):
    """The (B, Fc + Fd + M, dim) field embeddings, from one TorchRec table per field.

    ``grad_scale`` multiplies the gradient that flows back into the tables: the trainer sets it
    to this process's share of the global batch, so that the owner of a table, which receives
    the gradients of every process's rows, applies the gradient of the global batch's mean loss.
    """

    penalty: torch.Tensor | None

    def __init__(
        self, spec: FeatureSpec, dim: int, *, l2: float = 0.0, init_std: float = 1e-4
    ) -> None:
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        from torchrec.modules.embedding_configs import PoolingType

        if dim % 4:
            raise ValueError(f"sharded tables need an embed_dim divisible by 4, got {dim}")
        if l2 > 0 and spec.bag_vocab:
            raise ValueError(
                "embedding_l2 needs each looked-up row of a multi-valued field, and sharded "
                "tables return them pooled: set model.embedding_l2=0 or use replicated tables"
            )
        self.dim, self.l2, self.penalty, self.grad_scale = dim, float(l2), None, 1.0
        self.cat_keys = tuple(f"c{j}" for j in range(len(spec.cat_vocab)))
        self.bag_keys = tuple(f"b{m}" for m in range(len(spec.bag_vocab)))
        bound = math.sqrt(3.0) * init_std  # uniform with the standard deviation of the others
        configs = [
            EmbeddingBagConfig(
                name=key,
                embedding_dim=dim,
                num_embeddings=int(vocab),
                feature_names=[key],
                pooling=PoolingType.SUM if key[0] == "c" else PoolingType.MEAN,
                weight_init_min=-bound,
                weight_init_max=bound,
            )
            for key, vocab in zip(
                (*self.cat_keys, *self.bag_keys), (*spec.cat_vocab, *spec.bag_vocab)
            )
        ]
        self.tables = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
        self.num_dense = len(spec.dense_names)
        self.dense_weight = nn.Parameter(torch.empty(self.num_dense, dim))
        nn.init.normal_(self.dense_weight, std=init_std)

    def _scaled(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient into the tables times ``grad_scale`` as it is when the backward pass
        runs: the trainer sets this step's share after the forward pass (once every process
        has counted its rows), so a value taken at the forward pass would be the last step's
        (1.0 at the first step of a run or of a resume)."""
        return grad if self.grad_scale == 1.0 else grad * self.grad_scale

    @property
    def table_names(self) -> tuple[str, ...]:
        """The tables (and features) in field order: categorical fields, then multi-valued."""
        return (*self.cat_keys, *self.bag_keys)

    def features(self, x: torch.Tensor, bags: torch.Tensor | None) -> object:
        """The batch as a ``KeyedJaggedTensor``: one id per categorical field and row, the
        non-padding ids of each multi-valued field."""
        from torchrec import KeyedJaggedTensor

        values = [x.t().reshape(-1)]
        lengths = [torch.ones(x.numel(), dtype=torch.int32, device=x.device)]
        for m in range(len(self.bag_keys)):
            assert bags is not None
            ids = bags[:, m, :]
            valid = ids >= 0
            values.append(ids[valid])
            lengths.append(valid.sum(dim=1, dtype=torch.int32))
        return KeyedJaggedTensor.from_lengths_sync(
            keys=list(self.table_names),
            values=torch.cat(values),
            lengths=torch.cat(lengths),
        )

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (dense is None) != (self.num_dense == 0):
            raise ValueError(f"the feature spec has {self.num_dense} dense fields: dense mismatch")
        pooled = self.tables(self.features(x, bags)).to_dict()
        b, d = x.shape[0], self.dim
        cat = torch.stack([pooled[k] for k in self.cat_keys], dim=1).view(b, -1, d)
        if cat.requires_grad:
            cat.register_hook(self._scaled)
        parts = [cat]
        if dense is not None:
            parts.append(dense.unsqueeze(-1).to(cat.dtype) * self.dense_weight)
        if self.bag_keys:
            bag = torch.stack([pooled[k] for k in self.bag_keys], dim=1)
            if bag.requires_grad:
                bag.register_hook(self._scaled)
            parts.append(bag)
        penalize = self.training and self.l2 > 0
        self.penalty = cat.pow(2).sum() * (self.l2 / b) if penalize else None
        return torch.cat(parts, dim=1) if len(parts) > 1 else cat
