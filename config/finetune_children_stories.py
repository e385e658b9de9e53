# Fine-tune GPT-2 (124M) on children's stories: data/children_stories, ~2.0M GPT-2 tokens of 17
# public-domain books (1.8M train, 0.2M val).
#
#   python data/children_stories/prepare.py                     # once
#   python train.py config/finetune_children_stories.py         # device=auto: CUDA, else Apple MPS, else CPU
#   python train.py config/finetune_children_stories.py --init_from=resume     # after Ctrl-C: goes on exactly
#   torchrun --standalone --nproc_per_node=4 train.py config/finetune_children_stories.py   # several GPUs
#
# Expected time for the full run (200 iterations x 16,384 tokens = 3.3M tokens, ~1.8 epochs, plus 9 evals):
#   CPU, float32 (--dtype=float32, or dtype=auto on CPUs without bf16 units): measured ~250 tokens/s on a
#       2-core Xeon (block 512, dropout on): ~65 s per iteration, ~2 hours per epoch, ~4 hours in all, ~9 GB
#       of RAM. On CPUs with native bf16 (AMX: Intel Xeon 4th gen and later) dtype=auto trains with
#       bfloat16 autocast: ~450 tokens/s measured, about half the time. More cores scale
#       roughly linearly. A few dozen iterations already shift the probabilities visibly (eval.py), and
#       Ctrl-C keeps what is done, so a CPU run can be stopped early.
#   Apple MPS, float32: estimated 1,000-5,000 tokens/s depending on the chip (M1 to M3 Max), from ~0.8 GFLOP
#       per token at a third of the GPU's peak: 15-60 minutes.
#   One NVIDIA GPU (bfloat16 on Ampere and newer, float16 + GradScaler on older; compiled): estimated
#       100k+ tokens/s on an A100/H100 (about a minute with compile and evals), 10-20k on a T4 or RTX 3060
#       (3-6 minutes).
# Increase batch_size and decrease gradient_accumulation_steps on a GPU with memory to spare (keep their
# product at 32 sequences); on 4 GPUs with torchrun each one takes 2 of the 8 micro-steps.

out_dir = 'out-children-stories'
init_from = 'gpt2'  # OpenAI's 124M weights (downloaded by transformers); or a local Hugging Face GPT-2 folder
dataset = 'children_stories'

# evaluate often and keep only the best model: 124M parameters memorize 2M tokens within a few epochs
# (a known upstream complaint: train loss 0.67 against val 3.9 after training on with "always save")
eval_interval = 25
eval_iters = 20  # 20 x 4 x 512 = 41k tokens per split: a steady estimate
log_interval = 1
always_save_checkpoint = False  # ckpt.pt = the best val loss; ckpt_last.pt = the latest state
early_stop_patience = 3  # stop after 3 evals (75 iterations) without a better val loss

wandb_log = False
wandb_project = 'children-stories'
wandb_run_name = 'ft-gpt2'

# 4 x 512 tokens x 8 micro-steps = 16,384 tokens per iteration; one epoch is ~110 iterations
batch_size = 4
block_size = 512  # stories need context; GPT-2's 1024 would double the attention memory for little gain
gradient_accumulation_steps = 8

# fine-tune gently: a small peak learning rate, short warmup, cosine decay to a tenth
learning_rate = 6e-5
max_iters = 200
lr_decay_iters = 200
min_lr = 6e-6
warmup_iters = 10
weight_decay = 0.1
beta2 = 0.99
dropout = 0.1  # regularizes a small corpus
