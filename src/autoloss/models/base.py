"""What every model shares: the feature spec, the common hyper-parameters and the parts built
from them (field embeddings, the linear term, MLP towers), the logits shape, and embedding
regularisation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.layers import MLP, FieldEmbedding, FieldLinear


@dataclass(frozen=True)
class CommonHParams:
    """The hyper-parameters every model takes (a model may leave some unused, e.g. LR)."""

    embed_dim: int = 16
    mlp: tuple[int, ...] = (128, 128)
    dropout: float = 0.2
    batch_norm: bool = True
    embedding_l2: float = 0.0
    dense_init: str = "torch"  # torch | xavier: see CTRModel.init_dense


DENSE_INITS = ("torch", "xavier")

#: Where the models built now keep their field embeddings: ``local`` (one ``nn.Embedding`` table)
#: or ``torchrec`` (one TorchRec table per field, to be sharded: :func:`torchrec_tables`).
_TABLES: ContextVar[str] = ContextVar("autoloss_tables", default="local")


@contextmanager
def torchrec_tables() -> Iterator[None]:
    """Models built inside keep their field embeddings in TorchRec tables
    (:class:`~autoloss.models.torchrec_tables.TorchRecFieldEmbedding`); the first-order term
    keeps its table (a width of ``out_dim``, which FBGEMM's kernels do not take)."""
    token = _TABLES.set("torchrec")
    try:
        yield
    finally:
        _TABLES.reset(token)


class CTRModel(nn.Module):
    """Base of all models: ``forward(x, dense=None, bags=None) -> logits``.

    Logits are (B,) when ``spec.num_classes == 2`` and (B, C) otherwise; no sigmoid/softmax.
    Subclasses take ``(spec, *, <their own hyper-parameters>, **common)``, pass ``common`` on to
    this constructor (its keyword defaults are the common hyper-parameters, see
    :class:`CommonHParams`), build their parts with :meth:`field_embedding`,
    :meth:`field_linear` and :meth:`tower`, compute a (B, out_dim) tensor and return
    ``self.logits(t)``.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        embed_dim: int = CommonHParams.embed_dim,
        mlp: tuple[int, ...] = CommonHParams.mlp,
        dropout: float = CommonHParams.dropout,
        batch_norm: bool = CommonHParams.batch_norm,
        embedding_l2: float = CommonHParams.embedding_l2,
        dense_init: str = CommonHParams.dense_init,
    ) -> None:
        super().__init__()
        if dense_init not in DENSE_INITS:
            raise ValueError(
                f"dense_init must be one of {', '.join(DENSE_INITS)}, got {dense_init!r}"
            )
        self.spec = spec
        self.out_dim = spec.out_dim
        self.hp = CommonHParams(
            embed_dim, tuple(mlp), dropout, batch_norm, embedding_l2, dense_init
        )

    @torch.no_grad()
    def init_dense(self) -> None:
        """Initialise the dense layers by ``dense_init`` once the model is built (``build_model``
        calls it): ``torch`` keeps PyTorch's defaults (uniform, bound 1/sqrt(fan_in)); ``xavier``
        draws every ``nn.Linear`` weight from a Xavier normal and zeroes its bias, as FuxiCTR
        does. Embedding tables and layers with their own initialisation are left alone."""
        if self.hp.dense_init != "xavier":
            return
        for m in self.modules():
            if type(m) is nn.Linear:
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    m.bias.zero_()

    @property
    def flat_dim(self) -> int:
        """Width of the flattened field embeddings: fields x ``embed_dim``."""
        return self.spec.num_fields * self.hp.embed_dim

    def field_embedding(self) -> nn.Module:
        """The (B, F, embed_dim) embeddings of all fields, with ``embedding_l2``."""
        if _TABLES.get() == "torchrec":
            from autoloss.models.torchrec_tables import TorchRecFieldEmbedding

            return TorchRecFieldEmbedding(self.spec, self.hp.embed_dim, l2=self.hp.embedding_l2)
        return FieldEmbedding(self.spec, self.hp.embed_dim, l2=self.hp.embedding_l2)

    def field_linear(self) -> FieldLinear:
        """The first-order term (B, out_dim), with ``embedding_l2``."""
        return FieldLinear(self.spec, self.out_dim, l2=self.hp.embedding_l2)

    def tower(self, in_dim: int, *, head: bool = True) -> MLP:
        """An MLP of the common shape (``mlp``, ``dropout``, ``batch_norm``) over ``in_dim``
        inputs, ending in ``out_dim`` logits when ``head``."""
        hp = self.hp
        return MLP(in_dim, hp.mlp, hp.dropout, hp.batch_norm, self.out_dim if head else None)

    def logits(self, t: torch.Tensor) -> torch.Tensor:
        """(B, out_dim) -> (B,) for binary tasks, unchanged for multi-class."""
        return t.squeeze(-1) if self.out_dim == 1 else t

    def regularization(self) -> torch.Tensor:
        """Sum of the embedding L2 penalties stored by the last training forward (0 if none)."""
        total: torch.Tensor | None = None
        for m in self.modules():
            penalty = getattr(m, "penalty", None)  # field tables: FieldEmbedding and the like
            if isinstance(penalty, torch.Tensor):
                total = penalty if total is None else total + penalty
        if total is None:
            p = next(self.parameters(), None)
            return torch.zeros((), device=p.device if p is not None else None)
        return total
