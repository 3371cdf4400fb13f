"""`train --strategy multiworker`: tf.distribute.MultiWorkerMirroredStrategy configured by the standard TF_CONFIG.

Every worker runs the same command (same --out); TF_CONFIG says who it is:

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}'

The chief (task "chief", or worker 0 when the cluster has no "chief") writes the run folder; the other workers
write their checkpoints/logs into a private scratch folder that is removed when they finish (Keras saves on every
worker, so they need somewhere to write). `--batch-size` is the GLOBAL batch: the strategy splits it across workers.
Each dataset is sharded with AutoShardPolicy.DATA: every worker walks the same (seeded) pipeline and keeps its
own share of the batches, which works for any input pipeline (ours is a list of paths, not sharded files).
BatchNorm moving statistics are per-worker variables (each updates its own from its own batches), so before every
validation pass each worker recomputes them over the same, unsharded training images (PreciseBN, batchnorm.py):
all workers then hold the same model, and the all-worker mean of their val_loss is the saved model's loss.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


class DistributeError(ValueError):
    """TF_CONFIG missing or malformed: a one-line error for the CLI."""


@dataclass(frozen=True)
class WorkerRole:
    task_type: str
    task_index: int
    num_workers: int  # chief + workers
    has_chief: bool = False  # the cluster names a "chief" task (else worker 0 is the chief)

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                              and not self.has_chief)


def parse_tf_config(text: str | None = None) -> WorkerRole:
    """Who this process is, from TF_CONFIG (the environment variable when `text` is None)."""
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        raise DistributeError("--strategy multiworker needs TF_CONFIG (cluster and task); see the README")
    try:
        cfg = json.loads(text)
        cluster, task = cfg["cluster"], cfg["task"]
        task_type, index = str(task["type"]), int(task["index"])
        members = {k: list(v) for k, v in cluster.items() if k in ("chief", "worker")}
    except (ValueError, KeyError, TypeError) as exc:
        raise DistributeError(f"TF_CONFIG is not valid: {exc}") from None
    if task_type not in members or not 0 <= index < len(members[task_type]):
        raise DistributeError(f"TF_CONFIG task {task_type}:{index} is not in its cluster {sorted(members)}")
    return WorkerRole(task_type, index, sum(len(v) for v in members.values()), has_chief="chief" in members)


def multiworker_strategy():
    """MultiWorkerMirroredStrategy from TF_CONFIG. Must run before any other TensorFlow op of the process
    (collective ops are configured at start-up), so train() creates it first."""
    parse_tf_config()  # a clear error instead of TF silently training as a single worker
    import tensorflow as tf

    # RING: the all-reduce that works on CPU-only hosts; NCCL is picked automatically by AUTO on GPUs.
    impl = (tf.distribute.experimental.CommunicationImplementation.AUTO if tf.config.list_physical_devices("GPU")
            else tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=impl))
    patch_keras_for_multiworker()
    return strategy


def shard_by_data(ds):
    """Each worker keeps its own share of the elements (AutoShardPolicy.DATA) of the same seeded pipeline."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def run_folder(out: str | Path, strategy_name: str) -> tuple[Path, bool]:
    """(the folder this process writes, is it the chief). The chief (and any single-process strategy) writes
    `out`; another worker gets a scratch folder, removed when it finishes (`finish_worker`) or, failing that,
    when its process exits: it leaves nothing the user must clean up."""
    if strategy_name != "multiworker" or parse_tf_config().is_chief:
        return Path(out), True
    role = parse_tf_config()
    scratch = Path(tempfile.mkdtemp(prefix=f"leuk-edge-{role.task_type}{role.task_index}-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch, False


def worker_name() -> str:
    """This process in words, from TF_CONFIG: e.g. "worker 1 of 2"."""
    role = parse_tf_config()
    return f"{role.task_type} {role.task_index} of {role.num_workers}"


def finish_worker(scratch: Path) -> dict:
    """A non-chief worker is done after fit (the chief evaluates and writes the run): drop its scratch folder."""
    shutil.rmtree(scratch, ignore_errors=True)
    return {}



def patch_keras_for_multiworker() -> None:
    """Keras 3 (seen with 3.15 on TF 2.21) cannot fit() under MultiWorkerMirroredStrategy as shipped
    (tensorflow/tensorflow#72388): (1) the first symbolic build calls `strategy.reduce("MEAN", (x, y))` on a
    nested distributed batch, which this strategy cannot reduce; (2) `reduce_per_replica` reduces every per-step
    log value with `strategy.reduce("MEAN", v, axis=0)`, invalid for a scalar. Both spots only touch how Keras
    builds shapes and what it *reports*; gradients are all-reduced by the strategy. The patch builds from this
    worker's local batch and passes the step logs through (a `DistributedValues`, which only a worker with several
    devices produces, is averaged with `axis=None`).

    What makes the logged epoch metrics the mean over all workers is NOT this patch. With one device per worker
    `strategy.run` returns plain tensors, so the step logs the patch sees are this worker's own running values
    (they differ between workers, as a verbose=1 progress bar shows). At the end of each epoch and of each
    validation pass Keras replaces them by `metric.result()` (`_get_metrics_result_or_logs`), and every Keras
    metric keeps its state (`total`, `count`) in variables created with `synchronization="on_read",
    aggregation="sum"`: read outside a replica context those are summed over all workers by a collective
    all-reduce. So loss, accuracy and AUC in the epoch lines, history.csv and the callbacks (the checkpoint's
    val_loss) are totals over every worker's batches divided by the total count — the same numbers on every
    worker. Checked in tests/test_cluster_multiworker.py: both workers print the same epoch lines, and the best
    val_loss is the saved model's loss over the whole validation split. Idempotent."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_leuk_edge_multiworker", False) or not hasattr(tf_trainer, "reduce_per_replica"):
        return  # already patched, or a Keras whose internals moved (then presumably fixed upstream)
    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def is_multiworker(strategy) -> bool:
        return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def reduce_per_replica(values, strategy, reduction):
        if not is_multiworker(strategy) or reduction not in ("auto", "mean"):
            return original_reduce(values, strategy, reduction)

        def mean(v):
            if isinstance(v, tf.distribute.DistributedValues):
                return strategy.reduce("MEAN", v, axis=None)
            return v

        return tree.map_structure(mean, values)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not is_multiworker(self._distribute_strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            local = self.distribute_strategy.experimental_local_results
            data_batch = tree.map_structure(
                lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
            break
        return original_build(self, iterator=None, data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._leuk_edge_multiworker = True
