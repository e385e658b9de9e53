# A small GPT on the children's stories with a byte-level BPE trained on them (2,048 tokens, GPT-2's regex
# pre-split): ~3.35 bytes per token, so 64 tokens of context hold ~200 characters, and the 2,048 x 128
# embedding is small next to GPT-2's 50,257 x 128 (train_stories_tiny.py), so the same time buys a deeper
# model instead of a vocabulary.
#
#   python prepare_bin.py --input=data/children_stories/input.txt --tokenizer=bpe --vocab_size=2048 \
#       --out_dir=data/children_stories_bpe
#   python train.py config/train_stories_bpe.py
#   python sample.py --out_dir=out-stories-bpe --start="Once upon a time" --max_new_tokens=100
#
# The checkpoint records the tokenizer (tokenizer.json's text), so sample.py, eval.py, ... decode it even
# where data/children_stories_bpe is not.

out_dir = 'out-stories-bpe'
eval_interval = 100
eval_iters = 20
log_interval = 10
always_save_checkpoint = False  # keep the best val loss

wandb_log = False
wandb_project = 'children-stories'
wandb_run_name = 'bpe'

dataset = 'children_stories_bpe'
init_from = 'scratch'
gradient_accumulation_steps = 1
batch_size = 12
block_size = 64

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False

learning_rate = 2e-3
max_iters = 600  # 460 k tokens, about 1.5 MB of text
lr_decay_iters = 600
min_lr = 2e-4
beta2 = 0.99
warmup_iters = 50

compile = False
