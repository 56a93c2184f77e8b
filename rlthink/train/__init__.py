"""Training machinery shared by every algorithm: state, optimizer, jitted step, checkpoints, metrics."""

from rlthink.train.checkpoint import Checkpointer, CheckpointMismatchError
from rlthink.train.loop import run_steps
from rlthink.train.metrics import MetricsLogger
from rlthink.train.optim import OptimizerConfig, make_optimizer, set_total_steps
from rlthink.train.state import TrainState, create_state
from rlthink.train.step import NonFiniteLossError, make_train_step, sft_loss, shard_batch
