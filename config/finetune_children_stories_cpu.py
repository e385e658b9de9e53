# Fine-tune GPT-2 (124M) on the children's stories in about 5 minutes on a 2-core CPU, with LoRA adapters
# (train.py --lora_rank, nanoprobs/lora.py on Hugging Face PEFT): the 124M weights stay frozen, 1.2M adapter
# weights train, and the checkpoint holds only them, their AdamW state and the name of the base.
#
#   python data/children_stories/prepare.py                      # once
#   python eval.py --init_from=gpt2 --name=gpt2                  # "before"
#   python train.py config/finetune_children_stories_cpu.py      # this file
#   python eval.py --out_dir=out-children-stories-cpu --compare_to=results/eval_gpt2.json   # "after"
#
# Measured on GPT-2 124M's shape (random weights: no download here) on a 2-core CPU, otherwise idle, in
# float32 (--dtype=float32; dtype=auto now trains in bfloat16 autocast on CPUs with AMX, docs/train.md):
# 239.5 s in all (/usr/bin/time), 3.3 min of training for 24 iterations (7.4-12.3 s each), 4.11 GB peak RSS,
# a 14.3 MB checkpoint; 1,179,648 of 125,029,632 parameters train (docs/train.md, LoRA). With other jobs
# sharing both cores the same run took 648.7 s (float32) and 373.5 s (dtype=auto: bfloat16, 3.06 GB).
#
# The longer, full fine-tune of every weight is config/finetune_children_stories.py (hours on a CPU).

out_dir = 'out-children-stories-cpu'
init_from = 'gpt2'  # OpenAI's 124M weights (downloaded by transformers); or a local Hugging Face GPT-2 folder
dataset = 'children_stories'

# LoRA: rank-8 adapters on every matrix of every block (attention and MLP), scaled by alpha / rank = 2
lora_rank = 8
lora_alpha = 16.0
lora_dropout = 0.0  # a run this short has nothing to regularize; dropout would keep a copy of each input
lora_targets = 'all'
dropout = 0.0  # the frozen base runs as it was trained (GPT-2 124M: no dropout at inference either)

# 8 x 256 tokens per iteration; 24 iterations = 49k tokens, 5% of an epoch of the stories
batch_size = 4
block_size = 256
gradient_accumulation_steps = 2
max_iters = 24

# adapters start at zero (B = 0) and take a larger rate than full fine-tuning
learning_rate = 1e-3
warmup_iters = 2
lr_decay_iters = 24
min_lr = 1e-4
weight_decay = 0.0
beta2 = 0.99

eval_interval = 24  # evals before and after: 2 splits x 4 x 4 x 256 = 8k tokens each
eval_iters = 4
log_interval = 4
always_save_checkpoint = True  # ckpt.pt = the state after the last eval, for eval.py --out_dir
compile = False  # a CPU: torch.compile would not help

wandb_log = False
wandb_project = 'children-stories'
wandb_run_name = 'lora-cpu'
