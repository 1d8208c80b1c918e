"""Shared layers the models are built from: one job each, fully batched, traceable.

Shapes use B = batch size, F = number of fields seen by interaction layers (``spec.num_fields``:
categorical, then dense, then multi-valued fields), D = embedding width.

Embedding tables are ``nn.Embedding(..., sparse=True)`` stored in an attribute named
``embedding`` so that the trainer can give them a sparse (row-wise) optimiser.

The custom kernels these layers call (the sparse lookup, the FM term's backward, dropout's
masks) live in :mod:`autoloss.ops`, each with a switch back to PyTorch's own op.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from autoloss.data.spec import FeatureSpec
from autoloss.ops import dropout, lookup, pairwise

__all__ = [
    "MLP",
    "BiInteractionPooling",
    "CompressedInteraction",
    "CrossNetwork",
    "CrossNetworkV2",
    "Dropout",
    "FactorizationMachine",
    "FieldEmbedding",
    "FieldLinear",
    "InnerProduct",
    "SelfAttentionInteraction",
    "dropout",
]


class _SparseFieldTable(nn.Module):
    """One sparse table over all categorical and multi-valued fields, with per-field offsets.

    Row layout: categorical fields, then multi-valued fields (each ``vocab_size`` rows), then one
    all-zero padding row that bag padding (-1) points to. The padding row is the table's
    ``padding_idx``, so it receives no gradient and stays zero.
    """

    penalty: torch.Tensor | None
    offsets: torch.Tensor
    bag_offsets: torch.Tensor

    def __init__(self, spec: FeatureSpec, width: int, *, l2: float, init_std: float) -> None:
        super().__init__()
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        vocab = [int(v) for v in (*spec.cat_vocab, *spec.bag_vocab)]
        if any(v < 1 for v in vocab):
            raise ValueError(f"vocabulary sizes must be >= 1, got {vocab}")
        starts = [0]
        for v in vocab:
            starts.append(starts[-1] + v)
        self.num_cat = len(spec.cat_vocab)
        self.num_dense = len(spec.dense_names)
        self.num_bags = len(spec.bag_vocab)
        self.pad_row = starts[-1]
        self.l2 = float(l2)
        self.embedding = nn.Embedding(starts[-1] + 1, width, padding_idx=self.pad_row, sparse=True)
        nn.init.normal_(self.embedding.weight, std=init_std)
        with torch.no_grad():
            self.embedding.weight[self.pad_row].zero_()
        self.register_buffer(
            "offsets", torch.tensor(starts[: self.num_cat], dtype=torch.long), persistent=False
        )
        self.offset_starts = tuple(starts[: self.num_cat])  # the offsets as numbers
        self.register_buffer(
            "bag_offsets",
            torch.tensor(starts[self.num_cat : self.num_cat + self.num_bags], dtype=torch.long),
            persistent=False,
        )
        self.penalty = None

    @property
    def num_rows(self) -> int:
        return int(self.embedding.num_embeddings)

    def _lookup_cat(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Fc) local ids -> (B, Fc, W)."""
        # no padding_idx here: it would filter every backward through a boolean mask for nothing
        return lookup(self.embedding.weight, x + self.offsets, x, self.offset_starts)

    def _lookup_bags(self, bags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, L) local ids padded with -1 -> mean-pooled (B, M, W) and the raw (B, M, L, W).

        Padding points at the zero row, so the sum over L is the sum over real entries; dividing by
        the real count (at least 1) gives the mean, and an all-padding bag gives a zero vector.
        """
        valid = bags >= 0
        ids = torch.where(valid, bags + self.bag_offsets.view(1, -1, 1), self.pad_row)
        # padding_idx keeps the zero row out of the gradient; jit.trace warns on its bounds
        # check, and it only matters for backward
        pad = None if torch.jit.is_tracing() else self.pad_row
        rows = F.embedding(ids, self.embedding.weight, pad, sparse=True)
        count = valid.sum(dim=2, keepdim=True).clamp_(min=1).to(rows.dtype)
        return rows.sum(dim=2) / count, rows

    def _check(
        self, x: torch.Tensor, dense: torch.Tensor | None, bags: torch.Tensor | None
    ) -> None:
        if not torch.jit.is_tracing() and x.shape[1] != self.num_cat:  # traced sizes are tensors
            raise ValueError(f"expected {self.num_cat} categorical columns, got {x.shape[1]}")
        if (dense is None) != (self.num_dense == 0):
            raise ValueError(f"the feature spec has {self.num_dense} dense fields: dense mismatch")
        if (bags is None) != (self.num_bags == 0):
            raise ValueError(
                f"the feature spec has {self.num_bags} multi-valued fields: bags mismatch"
            )


class FieldEmbedding(_SparseFieldTable):
    """Field embeddings from one shared sparse table.

    Categorical field j looks up row ``offsets[j] + x[:, j]``. Multi-valued fields use the same
    table (their own offsets) and are mean-pooled over non-padding entries. Dense field k is a
    learnable vector scaled by the value: ``dense[:, k, None] * dense_weight[k]``.

    With ``l2 > 0`` a training forward stores ``penalty = l2 * sum(looked-up rows ** 2) / B``: the
    regulariser touches only the rows of this batch (counted once per occurrence), which keeps
    sparse updates sparse. Read it through the model's ``regularization()``.

    Shapes:
        x: (B, Fc) int field-local ids; dense: (B, Fd) float or None; bags: (B, M, L) int padded
        with -1, or None. Output: (B, Fc + Fd + M, dim).

    Example:
        >>> spec = FeatureSpec(cat_names=("a", "b"), cat_vocab=(3, 5))
        >>> FieldEmbedding(spec, 4)(torch.tensor([[0, 4]])).shape
        torch.Size([1, 2, 4])
    """

    def __init__(
        self, spec: FeatureSpec, dim: int, *, l2: float = 0.0, init_std: float = 1e-4
    ) -> None:
        super().__init__(spec, dim, l2=l2, init_std=init_std)
        self.dim = dim
        self.num_fields = spec.num_fields
        self.dense_weight = nn.Parameter(torch.empty(self.num_dense, dim))
        nn.init.normal_(self.dense_weight, std=init_std)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._check(x, dense, bags)
        emb = self._lookup_cat(x)
        parts = [emb]
        penalize = self.training and self.l2 > 0
        penalty = emb.pow(2).sum() if penalize else None
        if dense is not None:
            parts.append(dense.unsqueeze(-1).to(emb.dtype) * self.dense_weight)
        if bags is not None:
            pooled, rows = self._lookup_bags(bags)
            parts.append(pooled)
            if penalty is not None:
                penalty = penalty + rows.pow(2).sum()
        self.penalty = None if penalty is None else penalty * (self.l2 / x.shape[0])
        return torch.cat(parts, dim=1) if len(parts) > 1 else emb


class FieldLinear(_SparseFieldTable):
    """First-order (wide) term: a sparse width-``out_dim`` table, dense weights and a bias.

    ``sum_j w[offsets[j] + x[:, j]] + sum_m mean(w[bag m]) + dense @ W_dense + b``.
    One lookup for all categorical fields. ``l2`` works as in :class:`FieldEmbedding`.

    Shapes:
        x: (B, Fc); dense: (B, Fd) or None; bags: (B, M, L) or None -> (B, out_dim).
    """

    def __init__(
        self, spec: FeatureSpec, out_dim: int = 1, *, l2: float = 0.0, init_std: float = 1e-4
    ) -> None:
        super().__init__(spec, out_dim, l2=l2, init_std=init_std)
        self.out_dim = out_dim
        self.dense_weight = nn.Parameter(torch.zeros(self.num_dense, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._check(x, dense, bags)
        w = self._lookup_cat(x)
        out = w.sum(dim=1) + self.bias
        penalize = self.training and self.l2 > 0
        penalty = w.pow(2).sum() if penalize else None
        if dense is not None:
            out = out + dense.to(out.dtype) @ self.dense_weight
        if bags is not None:
            pooled, rows = self._lookup_bags(bags)
            out = out + pooled.sum(dim=1)
            if penalty is not None:
                penalty = penalty + rows.pow(2).sum()
        self.penalty = None if penalty is None else penalty * (self.l2 / x.shape[0])
        return out


class FactorizationMachine(nn.Module):
    """Pairwise interactions ``sum_{i<j} <e_i, e_j>`` by the square-of-sum trick (O(F·D),
    :func:`autoloss.ops.pairwise`).

    Shapes: (B, F, D) -> (B, 1) with ``reduce_sum`` else the bi-interaction vector (B, D).
    """

    def __init__(self, reduce_sum: bool = True) -> None:
        super().__init__()
        self.reduce_sum = reduce_sum

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return pairwise(emb, self.reduce_sum)


class BiInteractionPooling(FactorizationMachine):
    """NFM's bi-interaction pooling: ``sum_{i<j} e_i ⊙ e_j``. Shapes: (B, F, D) -> (B, D)."""

    def __init__(self) -> None:
        super().__init__(reduce_sum=False)


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its masks with :func:`autoloss.ops.dropout` (cheaper on the CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that also trains on a batch of one row: a single row has no batch
    statistics (torch raises), so it is normalised with the running statistics, which it leaves
    unchanged (``--batch-size 1``, a last batch of one row, one rank's single row under
    ``--nproc``). Batches of two rows or more: exactly ``nn.BatchNorm1d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class MLP(nn.Module):
    """Feed-forward tower: per hidden layer Linear, [BatchNorm1d], ReLU, [Dropout]; optional head.

    Shapes: (B, in_dim) -> (B, out_dim) with ``out_dim``, else (B, hidden[-1]) (or (B, in_dim)
    when ``hidden`` is empty). ``output_dim`` tells which.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...] = (128, 128),
        dropout: float = 0.2,
        batch_norm: bool = True,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.net = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossNetwork(nn.Module):
    """DCN (v1) cross layers: ``x_{l+1} = x_0 · (x_l^T w_l) + b_l + x_l``.

    Shapes: (B, in_dim) -> (B, in_dim).
    """

    def __init__(self, in_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_layers, in_dim, 1))
        self.bias = nn.Parameter(torch.zeros(num_layers, in_dim))
        nn.init.xavier_normal_(self.weight)
        self.num_layers = num_layers

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for i in range(self.num_layers):
            x = x0 * (x @ self.weight[i]) + self.bias[i] + x
        return x


class CrossNetworkV2(nn.Module):
    """DCN-V2 full-rank cross layers: ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``.

    Shapes: (B, in_dim) -> (B, in_dim).
    """

    def __init__(self, in_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class CompressedInteraction(nn.Module):
    """xDeepFM's Compressed Interaction Network (CIN).

    Layer k: ``X_k[h] = sum_{i,j} W_k[h, i, j] · (X_{k-1}[i] ⊙ X_0[j])`` (a 1x1 convolution over
    the outer product along fields, no activation as in the paper); each layer's maps are
    sum-pooled over D. With ``split_half`` every layer but the last sends half its maps to the
    output and half to the next layer.

    Shapes: (B, F, D) -> (B, output_dim), ``output_dim`` = sum of the pooled map counts.
    """

    def __init__(
        self, num_fields: int, layer_sizes: tuple[int, ...] = (32, 32), split_half: bool = True
    ) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.keep: list[int] = []
        prev, out = num_fields, 0
        for k, h in enumerate(layer_sizes):
            last = k == len(layer_sizes) - 1
            if split_half and not last and h % 2:
                raise ValueError(f"CIN layer sizes must be even with split_half, got {h}")
            w = torch.empty(prev * num_fields, h)  # (H_{k-1}·F, H_k): a 1x1 convolution
            nn.init.xavier_uniform_(w)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(h)))
            nxt = h // 2 if split_half and not last else h
            self.keep.append(nxt)
            out += h - nxt if split_half and not last else h
            prev = nxt
        self.split_half = split_half
        self.output_dim = out

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        b, f, d = x0.shape
        # work in (B·D, ·) layout so that each layer is one large GEMM instead of B small ones
        x0t = x0.transpose(1, 2).reshape(b * d, 1, f)
        xk = x0t.transpose(1, 2)  # (B·D, H_0 = F, 1)
        pooled = []
        last = len(self.keep) - 1
        for k, (w, bias) in enumerate(zip(self.weights, self.biases)):
            z = (xk * x0t).reshape(b * d, -1)  # (B·D, H_{k-1}·F) outer products
            h = torch.addmm(bias, z, w).view(b, d, -1)  # (B, D, H_k)
            if self.split_half and k != last:
                nxt = self.keep[k]
                out = h[:, :, nxt:]
                xk = h[:, :, :nxt].reshape(b * d, nxt, 1)
            else:
                out = h
                xk = h.reshape(b * d, -1, 1)
            pooled.append(out.sum(dim=1))
        return torch.cat(pooled, dim=1)


class InnerProduct(nn.Module):
    """All pairwise inner products ``<e_i, e_j>``, i < j (IPNN's product layer).

    Shapes: (B, F, D) -> (B, F·(F-1)/2), pairs in row-major upper-triangle order.
    """

    pair_index: torch.Tensor

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("pair_index", rows * num_fields + cols, persistent=False)
        self.output_dim = num_fields * (num_fields - 1) // 2

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(emb, emb.transpose(1, 2))  # (B, F, F)
        return gram.flatten(1).index_select(1, self.pair_index)


class SelfAttentionInteraction(nn.Module):
    """One AutoInt interacting layer: multi-head self-attention over fields, residual, ReLU.

    ``softmax(Q K^T [/ sqrt(d_head)]) V`` per head, heads concatenated, plus ``W_res e`` (residual).
    Stack several by setting ``in_dim`` of the next to ``attention_dim``.

    Shapes: (B, F, in_dim) -> (B, F, attention_dim).
    """

    def __init__(
        self,
        in_dim: int,
        attention_dim: int = 32,
        num_heads: int = 2,
        residual: bool = True,
        scale: bool = False,
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.residual = residual
        # Q, K, V (and the residual projection) in one matmul
        self.proj = nn.Linear(in_dim, (4 if residual else 3) * attention_dim, bias=False)
        self.scale = self.head_dim**-0.5 if scale else 1.0

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        b, f, _ = emb.shape
        parts = self.proj(emb).chunk(4 if self.residual else 3, dim=-1)
        # chunk (not indexing) so that backward concatenates instead of zero-filling
        q, k, v = (
            t.reshape(b, f, self.num_heads, self.head_dim).transpose(1, 2) for t in parts[:3]
        )
        attn = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)  # (B, H, F, F)
        out = (attn @ v).transpose(1, 2).reshape(b, f, -1)
        if self.residual:
            out = out + parts[3]
        return torch.relu(out)
