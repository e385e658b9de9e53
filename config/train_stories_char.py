# A character-level GPT on the children's stories, the size of upstream's CPU recipe for shakespeare_char
# (4 layers, 128 channels, 64 characters of context): one token per character (120 of them, plus
# <|endoftext|>: 121 tokens), so the vocabulary is tiny and all the compute goes into the transformer.
# Measured on this project's 2-core machine while other jobs shared it (load average ~5): the whole config in
# 1,630 s (`/usr/bin/time -f %e python train.py config/train_stories_char.py`), val loss 4.83 -> 1.85 nats
# per character (2.66 bits per character); its samples are English words in a story rhythm, not yet
# sentences (`python sample.py --out_dir=out-stories-char --start="Once upon a time" --num_samples=2
# --max_new_tokens=200`): "Once upon a time you shall back him, befor with give he rip and all apped solled
# at as could but asly not flew theep to him."
#
#   python prepare_bin.py --input=data/children_stories/input.txt --tokenizer=char \
#       --out_dir=data/children_stories_char
#   python train.py config/train_stories_char.py
#   python sample.py --out_dir=out-stories-char --start="Once upon a time" --max_new_tokens=300
#
# (data/children_stories/prepare.py writes input.txt; any text file works.) Upstream's sample.py reads this
# checkpoint too: it finds data/children_stories_char/meta.pkl through config['dataset'].

out_dir = 'out-stories-char'
eval_interval = 250
eval_iters = 20
log_interval = 25
always_save_checkpoint = False  # keep the best val loss

wandb_log = False
wandb_project = 'children-stories'
wandb_run_name = 'char'

dataset = 'children_stories_char'
init_from = 'scratch'
gradient_accumulation_steps = 1
batch_size = 12
block_size = 64  # characters of context: about a dozen words

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # well under one pass over the 4.2 M characters of train text: nothing to regularize yet
bias = False

learning_rate = 2e-3  # baby networks take a high learning rate
max_iters = 1500  # 1.15 M characters of text
lr_decay_iters = 1500  # equal to max_iters
min_lr = 2e-4  # learning_rate / 10
beta2 = 0.99  # few tokens per iteration
warmup_iters = 100

compile = False  # a tiny model on a CPU: compiling would take longer than training
