"""Shared layers against their formulas: embeddings, offsets, bags, linear term, interactions."""

from __future__ import annotations

import itertools

import pytest
import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.layers import (
    MLP,
    BiInteractionPooling,
    CompressedInteraction,
    CrossNetwork,
    CrossNetworkV2,
    Dropout,
    FactorizationMachine,
    FieldEmbedding,
    FieldLinear,
    InnerProduct,
    SelfAttentionInteraction,
    dropout,
)

SPEC = FeatureSpec(
    cat_names=("a", "b"),
    cat_vocab=(4, 6),
    dense_names=("p", "q"),
    bag_names=("g", "h"),
    bag_vocab=(5, 3),
)


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.tensor([[1, 1], [3, 5], [0, 0]])
    dense = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.0, 1.0]])
    bags = torch.tensor(
        [
            [[1, 2, 2], [0, -1, -1]],
            [[4, -1, -1], [-1, -1, -1]],  # second bag empty
            [[-1, -1, -1], [2, 1, -1]],
        ]
    )
    return x, dense, bags


def test_offsets_give_each_field_its_own_rows() -> None:
    emb = FieldEmbedding(SPEC, 3)
    w = emb.embedding.weight
    x, dense, bags = inputs()
    out = emb(x, dense, bags)
    assert out.shape == (3, SPEC.num_fields, 3)
    # same local id 1 in fields a and b -> rows 1 and 4 + 1
    torch.testing.assert_close(out[0, 0], w[1])
    torch.testing.assert_close(out[0, 1], w[4 + 1])
    assert not torch.equal(out[0, 0], out[0, 1])
    assert emb.num_rows == 4 + 6 + 5 + 3 + 1  # + the padding row


def test_dense_fields_scale_one_vector_each() -> None:
    emb = FieldEmbedding(SPEC, 3)
    x, dense, bags = inputs()
    out = emb(x, dense, bags)
    torch.testing.assert_close(out[:, 2:4], dense[:, :, None] * emb.dense_weight[None])


def test_bag_pooling_is_the_mean_over_real_entries() -> None:
    emb = FieldEmbedding(SPEC, 3)
    w = emb.embedding.weight.detach()
    x, dense, bags = inputs()
    out = emb(x, dense, bags).detach()
    bag_start = (4 + 6, 4 + 6 + 5)
    for i, j in itertools.product(range(3), range(2)):
        ids = [int(t) for t in bags[i, j] if t >= 0]
        expected = (
            w[[bag_start[j] + t for t in ids]].mean(0) if ids else torch.zeros(3)
        )  # an empty bag pools to zero
        torch.testing.assert_close(out[i, 4 + j], expected)
    torch.testing.assert_close(out[1, 5], torch.zeros(3))


def test_padding_row_stays_zero_and_gets_no_gradient() -> None:
    emb = FieldEmbedding(SPEC, 3)
    x, dense, bags = inputs()
    emb(x, dense, bags).sum().backward()
    grad = emb.embedding.weight.grad
    assert grad is not None and grad.is_sparse
    rows = set(grad.coalesce().indices()[0].tolist())
    assert emb.pad_row not in rows
    assert torch.count_nonzero(emb.embedding.weight[emb.pad_row]) == 0
    # exactly the rows looked up: a(1,3,0) b(1,5,0) g(1,2,4) h(0,2,1)
    expected = {1, 3, 0, 4 + 1, 4 + 5, 4, 10 + 1, 10 + 2, 10 + 4, 15 + 0, 15 + 2, 15 + 1}
    assert rows == expected


def test_field_linear_equals_its_formula() -> None:
    lin = FieldLinear(SPEC, 1)
    with torch.no_grad():
        lin.dense_weight.normal_()
        lin.bias.fill_(0.3)
    w = lin.embedding.weight.detach()[:, 0]
    x, dense, bags = inputs()
    out = lin(x, dense, bags).detach()
    assert out.shape == (3, 1)
    for i in range(3):
        expected = 0.3 + w[x[i, 0]] + w[4 + x[i, 1]] + dense[i] @ lin.dense_weight.detach()[:, 0]
        for j, start in enumerate((10, 15)):
            ids = [start + int(t) for t in bags[i, j] if t >= 0]
            if ids:
                expected = expected + w[ids].mean()
        torch.testing.assert_close(out[i, 0], expected)
    assert FieldLinear(SPEC, 5)(x, dense, bags).shape == (3, 5)


def test_missing_dense_or_bags_is_an_error() -> None:
    emb = FieldEmbedding(SPEC, 3)
    x, dense, bags = inputs()
    with pytest.raises(ValueError, match="dense"):
        emb(x, None, bags)
    with pytest.raises(ValueError, match="bags"):
        emb(x, dense, None)
    with pytest.raises(ValueError, match="categorical"):
        emb(x[:, :1], dense, bags)


def test_l2_penalty_covers_the_looked_up_rows_only() -> None:
    emb = FieldEmbedding(SPEC, 3, l2=0.1)
    x, dense, bags = inputs()
    emb(x, dense, bags)
    assert emb.penalty is not None
    w = emb.embedding.weight.detach()
    cat_rows = (x + torch.tensor([0, 4])).flatten()
    bag_rows = torch.where(bags >= 0, bags + torch.tensor([10, 15]).view(1, 2, 1), emb.pad_row)
    expected = 0.1 * (w[cat_rows].pow(2).sum() + w[bag_rows.flatten()].pow(2).sum()) / 3
    torch.testing.assert_close(emb.penalty.detach(), expected)
    emb.penalty.backward()
    grad = emb.embedding.weight.grad
    assert grad is not None
    assert grad.coalesce().values().abs().sum() > 0
    emb.eval()
    emb(x, dense, bags)
    assert emb.penalty is None
    emb.train()
    FieldEmbedding(SPEC, 3)(x, dense, bags)  # l2 = 0: nothing stored
    assert FieldEmbedding(SPEC, 3).penalty is None


def test_fm_and_bi_interaction_equal_pairwise_sums() -> None:
    e = torch.randn(5, 4, 3, dtype=torch.float64)
    pairs = sum(e[:, i] * e[:, j] for i, j in itertools.combinations(range(4), 2))
    assert isinstance(pairs, torch.Tensor)
    torch.testing.assert_close(BiInteractionPooling()(e), pairs)
    torch.testing.assert_close(FactorizationMachine()(e), pairs.sum(1, keepdim=True))


@pytest.mark.parametrize("layer", [FactorizationMachine(), BiInteractionPooling()])
def test_fm_gradient_equals_autograd_of_the_pairwise_sum_to_second_order(
    layer: FactorizationMachine,
) -> None:
    """The hand-written backward (training) gives autograd's gradient of the explicit pairwise
    sum, its own second derivative is right (gradgradcheck: the unrolled hypergradient), and the
    forward values equal evaluation's (no graph) bit for bit."""
    torch.manual_seed(0)
    e = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    out = layer(e)
    assert out.grad_fn is not None and "PairwiseInteraction" in type(out.grad_fn).__name__
    pairs = sum(e[:, i] * e[:, j] for i, j in itertools.combinations(range(4), 2))
    assert isinstance(pairs, torch.Tensor)
    ref = pairs.sum(1, keepdim=True) if layer.reduce_sum else pairs
    up = torch.randn_like(ref)
    got = torch.autograd.grad((out * up).sum(), e)[0]
    torch.testing.assert_close(got, torch.autograd.grad((ref * up).sum(), e)[0])
    assert torch.autograd.gradgradcheck(layer, (e,))
    with torch.no_grad():
        assert torch.equal(layer(e), out.detach())


def test_inner_product_lists_all_pairs() -> None:
    e = torch.randn(5, 4, 3)
    out = InnerProduct(4)(e)
    expected = torch.stack(
        [(e[:, i] * e[:, j]).sum(-1) for i, j in itertools.combinations(range(4), 2)], dim=1
    )
    torch.testing.assert_close(out, expected)


def test_cross_networks_follow_their_recurrences() -> None:
    x0 = torch.randn(5, 6, dtype=torch.float64)
    cross = CrossNetwork(6, 2).double()
    with torch.no_grad():
        cross.bias.normal_()
    x = x0
    for i in range(2):
        x = x0 * (x @ cross.weight[i]) + cross.bias[i] + x
    torch.testing.assert_close(cross(x0), x)

    v2 = CrossNetworkV2(6, 2).double()
    x = x0
    for layer in v2.layers:
        x = x0 * (x @ layer.weight.T + layer.bias) + x
    torch.testing.assert_close(v2(x0), x)


@pytest.mark.parametrize("split_half", [True, False])
def test_cin_equals_the_naive_formula(split_half: bool) -> None:
    b, f, d = 3, 4, 5
    x0 = torch.randn(b, f, d, dtype=torch.float64)
    cin = CompressedInteraction(f, (6, 4), split_half=split_half).double()
    with torch.no_grad():
        for bias in cin.biases:
            bias.normal_()
    xk, pooled = x0, []
    for k, (w, bias) in enumerate(zip(cin.weights, cin.biases)):
        wk = w.T.reshape(-1, xk.shape[1], f)  # (H_k, H_{k-1}, F)
        h = torch.einsum("oij,bid,bjd->bod", wk, xk, x0) + bias[None, :, None]
        if split_half and k == 0:
            xk, out = h[:, :3], h[:, 3:]
        else:
            xk, out = h, h
        pooled.append(out.sum(2))
    expected = torch.cat(pooled, 1)
    assert cin.output_dim == expected.shape[1] == (3 + 4 if split_half else 10)
    torch.testing.assert_close(cin(x0), expected)


def test_self_attention_shapes_and_residual() -> None:
    e = torch.randn(5, 4, 8)
    layer = SelfAttentionInteraction(8, attention_dim=6, num_heads=2)
    assert layer(e).shape == (5, 4, 6)
    assert (layer(e) >= 0).all()  # ReLU output
    with pytest.raises(ValueError, match="divisible"):
        SelfAttentionInteraction(8, attention_dim=5, num_heads=2)
    # without residual and with one head this is softmax(QK^T)V, ReLU'd
    plain = SelfAttentionInteraction(8, attention_dim=6, num_heads=1, residual=False)
    q, k, v = (e @ w.T for w in plain.proj.weight.chunk(3, 0))
    expected = torch.relu(torch.softmax(q @ k.transpose(1, 2), -1) @ v)
    torch.testing.assert_close(plain(e), expected)


def test_mlp_layout_and_output_dim() -> None:
    mlp = MLP(10, (8, 4), dropout=0.2, batch_norm=True, out_dim=3)
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == [
        "Linear", "BatchNorm1d", "ReLU", "Dropout",
        "Linear", "BatchNorm1d", "ReLU", "Dropout",
        "Linear",
    ]  # fmt: skip
    assert mlp(torch.randn(7, 10)).shape == (7, 3)
    assert MLP(10, (8,), dropout=0.0, batch_norm=False).output_dim == 8
    assert MLP(10, ()).output_dim == 10


def test_dropout_is_the_identity_in_evaluation_and_at_p_zero() -> None:
    x = torch.randn(50, 7)
    assert torch.equal(dropout(x, 0.3, training=False), x)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    layer = Dropout(0.3).eval()
    assert torch.equal(layer(x), x)
    assert isinstance(MLP(7, (4,), dropout=0.3).net[3], Dropout)
