# A small GPT from scratch on the children's stories, to watch a model learn: in about two minutes on a
# 2-core CPU the loss falls from 10.8 (uniform over 50k tokens) to about 6, and samples go from random
# tokens to story words in an English-like order ("the prince near the little father", "the little key
# in the little ground"): vocabulary and rhythm, not yet grammar.
#
#   python data/children_stories/prepare.py     # once: data/children_stories/train.bin, val.bin
#   python train.py config/train_stories_tiny.py
#   python sample.py --out_dir=out-stories-tiny --start="Once upon a time" --show_probs=True
#
# Measured on a 2-core AMD EPYC, idle, in a fresh clone (float32, `/usr/bin/time -f %e`): 250 iterations of
# 1,024 tokens + 6 evals in 115 s (~2,900 tokens/s), val loss 10.85 -> 6.33; on a 2-core Xeon with AMX
# (dtype=auto: bfloat16 autocast) 117 s, val loss 6.32. A GPU does it in seconds.

out_dir = 'out-stories-tiny'
eval_interval = 50
eval_iters = 10
log_interval = 10
always_save_checkpoint = False  # keep the best val loss

wandb_log = False
wandb_project = 'children-stories'
wandb_run_name = 'tiny'

dataset = 'children_stories'  # GPT-2 token ids, so the model has GPT-2's 50304-entry (padded) vocabulary
init_from = 'scratch'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 64

# a baby GPT: the 50304 x 128 embedding (tied to the output layer) is most of its 7.2M parameters and
# most of its compute, so more layers would cost little time but learn slower in two minutes
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # one pass over a tenth of the data: nothing to regularize yet
bias = False

learning_rate = 2e-3  # baby networks take a high learning rate (3e-3 learned slower here)
max_iters = 250
lr_decay_iters = 250  # equal to max_iters
min_lr = 2e-4  # learning_rate / 10
beta2 = 0.99  # few tokens per iteration
warmup_iters = 20

compile = False  # a tiny model on a CPU: compiling would take longer than training
