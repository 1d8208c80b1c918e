"""AutoLoss in a TorchRec training loop: DLRM over a sharded EmbeddingBagCollection.

    torchrun --standalone --nproc_per_node 2 docs/examples/torchrec_dlrm.py [--data DIR] [--steps N]
    python docs/examples/torchrec_dlrm.py [--data DIR] [--steps N]     # one process

TorchRec's ``DLRM`` (a table per field) in ``DistributedModelParallel``: table-wise on CPU/gloo,
the planner's choice on CUDA/nccl. Batches (dense features + ``KeyedJaggedTensor``) come from a
binary dataset made by ``autoloss prepare`` (default: the embedded MovieLens sample). The last
line (rank 0) is JSON: test AUC, the controller's mean α before/after, each rank's tables.
"""

import argparse
import copy
import json
import os
import sys
from itertools import chain, count

import torch
import torch.distributed as dist
from torch import nn

import autoloss
from autoloss.metrics import binary_auc

try:
    import torchrec
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardedTensor
    from torchrec.models.dlrm import DLRM
    from torchrec.optim import CombinedOptimizer, KeyedOptimizerWrapper, RowWiseAdagrad
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.optimizers import in_backward_optimizer_filter
except ImportError:
    sys.exit(
        "this example needs TorchRec: "
        "pip install 'autoloss-rec[torchrec]' && pip install --no-deps torchrec==1.8.0"
    )


def setup(device: str) -> tuple[torch.device, int, int]:
    """The process group (torchrun's, or a world of one) and this rank's device."""
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    if "RANK" in os.environ:  # started by torchrun
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    dev = torch.device("cpu")
    if cuda:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev, dist.get_rank(), dist.get_world_size()


class DLRMLogits(DLRM):
    """TorchRec's DLRM returning logits (B,), the shape of AutoLoss's binary task."""

    def forward(self, dense: torch.Tensor, sparse: torchrec.KeyedJaggedTensor) -> torch.Tensor:
        return super().forward(dense, sparse).squeeze(1)


def build_model(spec: autoloss.FeatureSpec, device: torch.device) -> nn.Module:
    """One table (dim 16) per categorical and multi-valued field, on the meta device until
    DistributedModelParallel creates each table on the rank that holds it."""
    fields = [*zip(spec.cat_names, spec.cat_vocab), *zip(spec.bag_names, spec.bag_vocab)]
    tables = [
        torchrec.EmbeddingBagConfig(name=n, embedding_dim=16, num_embeddings=v, feature_names=[n])
        for n, v in fields
    ]
    ebc = torchrec.EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    dense_in = max(1, len(spec.dense_names))  # no numeric fields: one constant input
    return DLRMLogits(ebc, dense_in, [32, 16], [32, 1], dense_device=device)


def shard(model: nn.Module, device: torch.device, world: int) -> DistributedModelParallel:
    """Table-wise on CPU: each table whole on one rank (unconstrained, the planner would copy
    small tables to every rank; gloo has no row-wise sharding). On CUDA the planner chooses.

    The tables' optimiser runs inside their backward (FBGEMM's fused kernel, TorchRec's only one
    for a sharded table): row-wise Adagrad has CPU and CUDA kernels (so do SGD and Adagrad;
    FBGEMM's fused Adam has none on CPU). The dense layers get a normal optimiser (main)."""
    ebc = model.sparse_arch.embedding_bag_collection
    apply_optimizer_in_backward(RowWiseAdagrad, ebc.parameters(), {"lr": 0.05})
    constraints = None
    if device.type == "cpu":
        table_wise = ParameterConstraints(sharding_types=["table_wise"])
        constraints = {t.name: table_wise for t in ebc.embedding_bag_configs()}
    sharders = [EmbeddingBagCollectionSharder()]
    topology = Topology(world_size=world, compute_device=device.type)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    return DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)


class Feed:
    """This rank's part of each batch, as the model's inputs: (dense, KeyedJaggedTensor), y."""

    def __init__(self, data: autoloss.EncodedDataset, device: torch.device, rank: int, world: int):
        self.data, self.spec, self.device = data, data.spec, device
        self.rank, self.world = rank, world

    def inputs(self, b: autoloss.Batch) -> tuple[torch.Tensor, torchrec.KeyedJaggedTensor]:
        """(dense (B, Fd), KJT): a key per field; one id per row, or a bag without its -1s."""
        values = [b.x[:, j] for j in range(b.x.shape[1])]
        lengths = [torch.ones_like(v) for v in values]
        for m in range(len(self.spec.bag_names)):
            ids = b.bags[:, m, :]
            values.append(ids[ids >= 0])  # row by row, each row's ids in order
            lengths.append((ids >= 0).sum(1))
        kjt = torchrec.KeyedJaggedTensor.from_lengths_sync(
            keys=[*self.spec.cat_names, *self.spec.bag_names],
            values=torch.cat(values),
            lengths=torch.cat(lengths).int(),
        )
        dense = b.dense if b.dense is not None else torch.ones(len(b.y), 1)
        return dense.to(self.device), kjt.to(self.device)

    def epoch(self, split: str, size: int, epoch: int = 0, shuffle: bool = True):
        """The batches of one epoch: every rank gets the same count (its part of each)."""
        it = autoloss.BatchIterator(
            self.data.split(split), size, shuffle=shuffle, rank=self.rank, world_size=self.world
        )
        for b in it.epoch(epoch):
            yield self.inputs(b), b.y.to(self.device)

    def forever(self, split: str, size: int):
        return chain.from_iterable(self.epoch(split, size, e) for e in count())


def average_gradients(params) -> None:
    """The controller's gradients, averaged over the ranks: one controller everywhere."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def predict_test(model: nn.Module, feed: Feed) -> list[torch.Tensor]:
    """Logits and labels of the whole test split, gathered from every rank's part."""
    model.eval()
    with torch.no_grad():
        logits, labels = zip(*[(model(*x), y) for x, y in feed.epoch("test", 1024, shuffle=False)])
    parts = [None] * feed.world
    dist.all_gather_object(parts, (torch.cat(logits).cpu(), torch.cat(labels).cpu()))
    return [torch.cat(t).to(feed.device) for t in zip(*parts)]


def local_tables(model: nn.Module) -> list[str]:
    """The tables this rank holds (a table-wise shard is empty on the other ranks)."""
    state = model.state_dict()
    return [
        k.split(".")[-2]
        for k, t in state.items()
        if isinstance(t, ShardedTensor) and t.local_shards()
    ]


def train(
    model: nn.Module, crit: autoloss.AutoLoss, opt, feed: Feed, steps: int, size: int
) -> float:
    """The loop: AutoLoss as the criterion, a controller step every ``update_every`` steps."""
    train_batches, valid_batches = feed.forever("train", size), feed.forever("valid", size)
    model.train()
    for step in range(steps):
        x, y = next(train_batches)
        loss = crit(model(*x), y)  # mean_b Σ_k p_bk ℓ_bk
        opt.zero_grad()
        loss.backward()
        opt.step()
        if crit.should_update(step):  # the same steps on every rank: the forward is collective
            xv, yv = next(valid_batches)
            crit.update(model, xv, yv, train_batch=(x, y))
    return float(loss)


def report(model, crit, start, feed: Feed, loss: float, steps: int) -> None:
    """Rank 0 prints one JSON line: the test AUC, the controller's mean α before and after
    training (on the same test logits), and each rank's last loss, tables and controller sum."""
    z, y = predict_test(model, feed)
    controller = sum(float(p.double().sum()) for p in crit.parameters())  # equal on every rank
    mine = {
        "rank": feed.rank,
        "loss": loss,
        "tables": local_tables(model),
        "controller": controller,
    }
    ranks = [None] * feed.world
    dist.all_gather_object(ranks, mine)
    if feed.rank == 0:
        after, before = crit.probabilities(z, y).mean(0), start.probabilities(z, y).mean(0)
        out = {
            "world_size": feed.world,
            "steps": steps,
            "test_auc": binary_auc(y.cpu().numpy(), z.cpu().numpy()),
            "controller_updates": crit.updates,
            "mean_probabilities": dict(zip(crit.candidates, after.tolist())),
            "initial_probabilities": dict(zip(crit.candidates, before.tolist())),
            "ranks": ranks,
        }
        print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a binary dataset made by `autoloss prepare`")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=256, help="rows per rank and step")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device, rank, world = setup(args.device)
    data = autoloss.open_dataset(args.data)
    if data.spec.task != "binary":
        sys.exit(f"this example trains a binary task; {args.data} is {data.spec.task}")
    torch.manual_seed(0)  # the same initial controller on every rank
    # First-order: the controller needs only the model's validation logits. The unrolled mode's
    # virtual step W - ξ∇W cannot see the tables: DistributedModelParallel's table parameters
    # are views of FBGEMM's weights that autograd.grad cannot reach (it returns None for them).
    crit = autoloss.AutoLoss(task="binary", mode="first-order").to(device)
    crit.set_grad_sync(average_gradients)
    start = copy.deepcopy(crit)
    model = shard(build_model(data.spec, device), device, world)
    torch.manual_seed(1 + rank)  # each rank its own Gumbel noise and dropout masks
    dense = dict(in_backward_optimizer_filter(model.named_parameters()))
    adam = KeyedOptimizerWrapper(dense, lambda params: torch.optim.Adam(params, lr=1e-3))
    opt = CombinedOptimizer([model.fused_optimizer, adam])
    feed = Feed(data, device, rank, world)
    loss = train(model, crit, opt, feed, args.steps, args.batch_size)
    report(model, crit, start, feed, loss, args.steps)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
