"""
One tokenizer interface for GPT-2's BPE, a character vocabulary and a byte-level BPE trained on your data.

    gpt2   tiktoken's GPT-2 BPE (50,257 tokens); data made by prepare_bin.py --tokenizer=gpt2 (the default)
    char   one token per character of the train split: data/<dataset>/meta.pkl, upstream's format
           ({'vocab_size', 'itos', 'stoi'}), plus <|endoftext|> as the last id between documents
    bpe    byte-level BPE trained with Hugging Face `tokenizers` on the train split:
           data/<dataset>/tokenizer.json (any text encodes: every byte is a token)

Where a model's tokenizer comes from (tokenizer_for): the copy recorded in the checkpoint (train.py writes
it under the top-level key 'tokenizer', so a checkpoint copied anywhere still decodes); for checkpoints
without one (upstream's), the checkpoint's dataset folder, as upstream finds meta.pkl; else GPT-2.
"""

import os
import pickle
import re

EOT = '<|endoftext|>'
KINDS = ('gpt2', 'char', 'bpe')
GPT2_RECORD = {'kind': 'gpt2'}


class LoadError(ValueError):
    """A model or tokenizer that cannot be loaded; the message says why and what to do instead."""


class Tokenizer:
    """encode/decode for one vocabulary, plus the raw bytes of each token (for bits per byte)."""

    def __init__(self, name, encode, decode, token_bytes, vocab_size, eot=None, kind='gpt2', record=None,
                 encode_batch=None):
        self.name = name
        self._encode, self._decode, self._token_bytes = encode, decode, token_bytes
        self._encode_batch = encode_batch
        self.vocab_size = vocab_size
        self.eot = eot  # id of <|endoftext|>, or None
        self.kind = kind  # 'gpt2' | 'char' | 'bpe'
        self.record = record or GPT2_RECORD  # plain data that rebuilds this tokenizer (tokenizer_from_record)

    def encode(self, text):
        return self._encode(text)

    def encode_batch(self, texts):
        """Many texts at once (the trained BPE encodes them in parallel)."""
        return self._encode_batch(texts) if self._encode_batch else [self._encode(t) for t in texts]

    def decode(self, ids):
        return self._decode(list(ids))

    def token_bytes(self, i):
        """The raw bytes of one token (a BPE token may be part of a UTF-8 character)."""
        return self._token_bytes(i)

    def token_text(self, i):
        """One token as text for display: bytes that are part of a UTF-8 character show as <E2 80> (see
        byte_text), and the ids a padded vocabulary adds beyond the tokenizer's (upstream trains with
        50304 > 50257) as <id N>."""
        if not 0 <= i < self.vocab_size:
            return f"<id {i}>"
        return byte_text(self.token_bytes(i))

    def pieces(self, ids):
        """A token sequence as display pieces [(start, end, text)]: ids[start:end] shown as text. Every
        view of a sequence uses these. GPT-2 splits some characters into byte-level tokens (a curly quote
        “ is often two); tokens that together form whole characters are one piece with the characters'
        text, and a token whose character is not completed by the next ones keeps its label <E2 80>."""
        ids = [int(i) for i in ids]
        whole = lambda k: 0 <= ids[k] < self.vocab_size  # noqa: E731  (padding ids are never joined)
        out, i = [], 0
        while i < len(ids):
            end = i + 1
            if whole(i) and '\ufffd' in self.token_bytes(ids[i]).decode('utf-8', 'replace'):
                b = self.token_bytes(ids[i])
                for k in range(i + 1, min(i + 4, len(ids))):  # a character has at most 4 bytes
                    if not whole(k):
                        break
                    b += self.token_bytes(ids[k])
                    if '\ufffd' not in b.decode('utf-8', 'replace'):
                        end = k + 1
                        break
            text = self.token_text(ids[i]) if end == i + 1 else byte_text(b)
            out.append((i, end, text))
            i = end
        return out


    def display(self, ids):
        """ids as display text, from pieces: a character cut off at either end shows as <E2 80>, never
        as a replacement character (decode() is for whole texts)."""
        return ''.join(text for _, _, text in self.pieces(ids))


def byte_text(b):
    """Bytes as text; each run of bytes that are not whole UTF-8 characters as one compact label of their
    hex values: b' \\xe2\\x80' -> ' <E2 80>' (the start of a curly quote), b'\\x9c' -> '<9C>'."""
    out, run = [], []
    for ch in b.decode('utf-8', 'surrogateescape') + '\n':  # undecodable bytes become U+DC80..U+DCFF
        if '\udc80' <= ch <= '\udcff':
            run.append(f"{ord(ch) - 0xdc00:02X}")
            continue
        if run:
            out.append(f"<{' '.join(run)}>")
            run = []
        out.append(ch)
    return ''.join(out)[:-1]


LABEL = re.compile(r'<((?:[0-9A-F]{2} )*[0-9A-F]{2})>')


def label_bytes(text):
    """byte_text's inverse: ' <E2 80>' -> b' \xe2\x80' (for results that kept only a token's text)."""
    out, i = b'', 0
    for m in LABEL.finditer(text):
        out += text[i:m.start()].encode('utf-8') + bytes.fromhex(m.group(1))
        i = m.end()
    return out + text[i:].encode('utf-8')


def text_pieces(texts):
    """Tokenizer.pieces of tokens known only by their token_text (eval's results): runs whose bytes form
    whole characters are joined, by the same rule."""
    tok = Tokenizer('texts', None, None, lambda i: label_bytes(texts[i]), len(texts))
    return tok.pieces(range(len(texts)))


# -----------------------------------------------------------------------------
# GPT-2

# tiktoken's GPT-2 files (tiktoken_ext/openai_public.py: gpt2): where it downloads each one and the SHA-256
# it checks. Its cache (tiktoken/load.py: read_file_cached) names a file by the SHA-1 of that address.
GPT2_URL = 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/'
GPT2_FILES = {'vocab.bpe': '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5',
              'encoder.json': '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'}


def tiktoken_cache_name(name):
    """The file name tiktoken's cache gives GPT-2's file `name` ('vocab.bpe' or 'encoder.json')."""
    import hashlib
    return hashlib.sha1((GPT2_URL + name).encode()).hexdigest()


def gpt2_encoding():
    """tiktoken's GPT-2 encoding itself (prepare_bin.py streams with it); a LoadError if its files are
    missing."""
    import tiktoken
    try:
        return tiktoken.get_encoding('gpt2')
    except Exception as e:
        raise LoadError(
            f"could not load tiktoken's GPT-2 vocabulary ({type(e).__name__}: {e}). It is downloaded on "
            "first use; offline, point TIKTOKEN_CACHE_DIR at a folder holding the cached files (python -m "
            "tools.tiktoken_cache builds one from vocab.bpe and encoder.json)") from None


def gpt2_tokenizer():
    """tiktoken's GPT-2 BPE, <|endoftext|> allowed in text (as upstream sample.py)."""
    enc = gpt2_encoding()
    return Tokenizer('gpt2', lambda s: enc.encode(s, allowed_special={EOT}), enc.decode,
                     enc.decode_single_token_bytes, enc.n_vocab, eot=enc.eot_token,
                     encode_batch=lambda ts: enc.encode_batch(ts, allowed_special={EOT}))


# -----------------------------------------------------------------------------
# characters

class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: a meta.pkl naming any class or function
    is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"meta.pkl refers to {module}.{name}; only plain data is loaded")


def char_meta(text, unk=''):
    """The vocabulary of text's characters, sorted, then <|endoftext|> (and unk, if given and new):
    upstream's meta.pkl dict. unk (one character) is what characters outside the vocabulary become."""
    chars = sorted(set(text) | ({unk} if unk else set()))
    itos = dict(enumerate(chars + [EOT]))
    meta = {'vocab_size': len(itos), 'itos': itos, 'stoi': {s: i for i, s in itos.items()}}
    if unk:
        meta['unk'] = unk  # an extra key upstream ignores
    return meta


def _char_from_itos(itos, unk, name, where):
    """A character tokenizer from the list itos (id -> string); unk '' = unknown characters are an error."""
    stoi = {s: i for i, s in enumerate(itos)}
    eot = stoi.get(EOT)
    if unk and unk not in stoi:
        raise LoadError(f"{where}: the unknown symbol {unk!r} is not in the vocabulary")

    def encode_part(s):
        if unk:
            return [stoi.get(c, stoi[unk]) for c in s]
        missing = sorted(set(c for c in s if c not in stoi))
        if missing:
            raise ValueError(f"characters {missing[:10]}{' ...' if len(missing) > 10 else ''} are not in the "
                             f"vocabulary of {where} ({len(itos)} characters): remove them from the text")
        return [stoi[c] for c in s]

    def encode(s):
        if eot is None:
            return encode_part(s)
        ids = []
        for k, part in enumerate(s.split(EOT)):  # <|endoftext|> written in text is the separator token
            ids += ([eot] if k else []) + encode_part(part)
        return ids

    table = [s.encode('utf-8') for s in itos]
    record = {'kind': 'char', 'itos': list(itos), 'unk': unk}
    return Tokenizer(name, encode, lambda ids: ''.join(itos[i] for i in ids), table.__getitem__, len(itos),
                     eot=eot, kind='char', record=record)


def char_tokenizer(meta_path):
    """Character-level vocabulary from a nanoGPT meta.pkl ({'vocab_size', 'stoi', 'itos'})."""
    fix = "rewrite it with prepare_bin.py --tokenizer=char (or data/<dataset>/prepare.py)"
    try:
        with open(meta_path, 'rb') as f:
            meta = _PlainUnpickler(f).load()  # upstream's format, read without running code
    except pickle.UnpicklingError as e:
        if 'refers to' in str(e):  # a class or function: loading it would run code
            what = str(e).partition('refers to ')[2].partition(';')[0]
            raise LoadError(f"{meta_path} is not loaded: it names {what}, a class or function that "
                            f"unpickling would run; a meta.pkl holds plain data only: {fix}") from None
        raise LoadError(f"{meta_path} is not a readable pickle (truncated or corrupt?): {e}; {fix}") from None
    except OSError as e:
        raise LoadError(f"cannot read {meta_path} ({e.strerror})") from None
    except Exception as e:  # EOFError, ValueError, ...: a damaged or foreign file
        raise LoadError(f"{meta_path} is not a readable pickle (truncated or corrupt?): "
                        f"{type(e).__name__}: {e}; {fix}") from None
    if not isinstance(meta, dict) or not {'stoi', 'itos'} <= set(meta):
        raise LoadError(f"{meta_path} is not a character vocabulary: expected a dict with 'vocab_size', "
                        "'stoi' and 'itos' (as prepare_bin.py --tokenizer=char writes it)")
    return char_from_meta(meta, meta_path)


def char_from_meta(meta, where):
    """A character tokenizer from a meta.pkl dict; where names it in messages."""
    fix = "rewrite it with prepare_bin.py --tokenizer=char (or data/<dataset>/prepare.py)"
    itos = check_itos(meta['itos'], meta.get('unk', ''), where, fix)
    n = meta.get('vocab_size', len(itos))
    if n != len(itos):
        raise LoadError(f"{where}: 'vocab_size' is {n!r} but 'itos' holds {len(itos)} tokens; {fix}")
    return _char_from_itos(itos, meta.get('unk', ''), f'char:{where}', where)


def check_itos(itos, unk, where, fix):
    """A character vocabulary's id -> text table (a dict {0: text, ...} as upstream's meta.pkl, or a list)
    as a list of distinct strings, and unk '' or one of its characters; else a LoadError naming the entry."""
    if isinstance(itos, dict):
        missing = next((i for i in range(len(itos)) if i not in itos), None)
        if missing is not None:
            raise LoadError(f"{where}: 'itos' must map every id 0..{len(itos) - 1} to its text; id {missing} "
                            f"is missing; {fix}")
        itos = [itos[i] for i in range(len(itos))]
    elif not isinstance(itos, (list, tuple)):
        raise LoadError(f"{where}: 'itos' is a {type(itos).__name__}, not a dict {{id: text}} or a list; {fix}")
    seen = set()
    for i, t in enumerate(itos):
        if not isinstance(t, str) or not t:
            raise LoadError(f"{where}: 'itos' id {i} is {t!r}, not a string{' (empty)' if t == '' else ''}; "
                            f"{fix}")
        if t in seen:
            raise LoadError(f"{where}: 'itos' holds {t!r} twice; {fix}")
        seen.add(t)
    if not (unk == '' or isinstance(unk, str) and len(unk) == 1):
        raise LoadError(f"{where}: 'unk' is {unk!r}, not one character (or ''); {fix}")
    return list(itos)


def save_meta(meta, path):
    with open(path, 'wb') as f:
        pickle.dump(meta, f)


# -----------------------------------------------------------------------------
# byte-level BPE (Hugging Face tokenizers)

def _bytes_to_unicode():
    """GPT-2's map of the 256 bytes to printable characters, which byte-level BPE vocabularies
    are written in."""
    bs = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
          + list(range(ord('®'), ord('ÿ') + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_OF = {c: b for b, c in _bytes_to_unicode().items()}


def train_bpe(texts, vocab_size, regex=True):
    """A byte-level BPE trained on the iterable of strings texts: 256 byte tokens, merges up to vocab_size,
    <|endoftext|> as a special token. regex=True splits text first with GPT-2's pattern (words, numbers,
    punctuation, spaces), so no token crosses a word; regex=False lets merges span spaces and punctuation.
    Returns the Hugging Face tokenizer (save it with .save(path))."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=regex)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(texts, trainer)
    return hf


def bpe_tokenizer(json_str, name='bpe'):
    """A trained byte-level BPE from its tokenizer.json text."""
    from tokenizers import Tokenizer as HFTokenizer
    try:
        hf = HFTokenizer.from_str(json_str)
    except Exception as e:
        raise LoadError(f"{name} is not a Hugging Face tokenizer.json ({type(e).__name__}: {e})") from None
    n = hf.get_vocab_size(with_added_tokens=True)
    special = {t.content for t in hf.get_added_tokens_decoder().values()}
    try:
        table = [p.encode('utf-8') if p in special else bytes(BYTE_OF[c] for c in p)
                 for p in (hf.id_to_token(i) for i in range(n))]
    except (KeyError, TypeError):
        raise LoadError(f"{name} is not a byte-level BPE (made by prepare_bin.py --tokenizer=bpe)") from None
    eot = hf.token_to_id(EOT)

    def decode(ids):  # from the bytes, exactly as tiktoken does (a cut UTF-8 character shows as U+FFFD)
        return b''.join(table[i] for i in ids).decode('utf-8', errors='replace')

    return Tokenizer(name, lambda s: hf.encode(s).ids, decode, table.__getitem__, n, eot=eot, kind='bpe',
                     record={'kind': 'bpe', 'json': json_str},
                     encode_batch=lambda ts: [e.ids for e in hf.encode_batch(ts)])


def bpe_tokenizer_file(path):
    with open(path, 'r', encoding='utf-8') as f:
        return bpe_tokenizer(f.read(), f'bpe:{path}')


# -----------------------------------------------------------------------------
# which tokenizer a model uses

def tokenizer_from_record(rec, where='checkpoint'):
    """Rebuild the tokenizer a checkpoint recorded (its top-level 'tokenizer' key)."""
    kind = rec.get('kind') if isinstance(rec, dict) else None
    if kind == 'gpt2':
        return gpt2_tokenizer()
    if kind == 'char':
        fix = "delete the key to fall back to the dataset folder's meta.pkl, or use another checkpoint"
        itos = check_itos(rec.get('itos'), rec.get('unk', ''), where, fix)
        return _char_from_itos(itos, rec.get('unk', ''), f'char:{where}', where)
    if kind == 'bpe' and isinstance(rec.get('json'), str):
        return bpe_tokenizer(rec['json'], f'bpe:{where}')
    raise LoadError(f"{where}: its 'tokenizer' entry is not one of {', '.join(KINDS)} "
                    "(delete the key to fall back to the dataset folder's meta.pkl / tokenizer.json)")


def data_tokenizer(data_dir):
    """The vocabulary a data folder was made with: meta.pkl (characters), tokenizer.json (trained BPE), or
    None for GPT-2 token ids."""
    meta, tj = os.path.join(data_dir, 'meta.pkl'), os.path.join(data_dir, 'tokenizer.json')
    if os.path.exists(meta):
        if os.path.exists(tj):
            print(f"note: {data_dir} has both meta.pkl and tokenizer.json; using meta.pkl (as upstream)")
        return char_tokenizer(meta)
    if os.path.exists(tj):
        return bpe_tokenizer_file(tj)
    return None


def tokenizer_for(checkpoint=None, data_dir='data', where='checkpoint'):
    """The checkpoint's own tokenizer if it recorded one; else upstream's rule: a dataset folder with a
    meta.pkl (or our tokenizer.json) gives the vocabulary; everything else uses GPT-2's BPE."""
    checkpoint = checkpoint or {}
    if checkpoint.get('tokenizer'):
        return tokenizer_from_record(checkpoint['tokenizer'], where)
    dataset = (checkpoint.get('config') or {}).get('dataset')
    if dataset:
        folder = os.path.join(data_dir, dataset)
        for f in ('meta.pkl', 'tokenizer.json'):
            if os.path.exists(os.path.join(folder, f)):
                print(f"Loading meta from {os.path.join(folder, f)}...")
                break
        tok = data_tokenizer(folder)
        if tok is not None:
            return tok
    return gpt2_tokenizer()
