"""The grafting engine, for any network cut into blocks: adapters and grafted parts (`parts`), what the hybrid
is trained to match (`losses`), what the teacher is asked about (`views`), seeds in one step (`stacks`), both
stages written once (`engine`) and scores from shared teacher activations (`scoring`)."""

from .engine import (StageLog, block_optimizer, graft_blocks, graft_blocks_stacked, graft_net, graft_net_stacked,
                     needed_boundaries, net_optimizer, net_steps, netgraft, seed_cache, stage_spans, train_seeds)
from .losses import LossPlan, feature_loss, graft_loss, kd_loss, loss_plan, plan_loss, run_hybrid
from .parts import (ChannelMap, GraftParts, Grafted, adapter, export_student, fold, folds_adapters, new_parts,
                    set_map, start_parts)
from .scoring import SharedBoundaries
from .stacks import STACKS, LoopedParts, StackedParts, stack_for, stack_name
from .views import TeacherCache, augmented_views, epoch_batches, mix, pooled

__all__ = ["STACKS", "ChannelMap", "GraftParts", "Grafted", "LoopedParts", "LossPlan", "SharedBoundaries",
           "StackedParts", "StageLog", "TeacherCache", "adapter", "augmented_views", "block_optimizer", "epoch_batches",
           "export_student", "feature_loss", "fold", "folds_adapters", "graft_blocks", "graft_blocks_stacked",
           "graft_loss", "graft_net", "graft_net_stacked", "kd_loss", "loss_plan", "mix",
           "needed_boundaries", "net_optimizer", "net_steps", "netgraft", "new_parts", "plan_loss", "pooled",
           "run_hybrid", "seed_cache", "set_map", "stack_for", "stack_name", "stage_spans", "start_parts",
           "train_seeds"]
