"""
nanoprobs: the library behind the scripts, everything that is not the network (model.py) or the
command line (configurator.py).

From the ground up (each module imports only the ones above it in this list, and model.py/configurator.py):
    formatting   probabilities, ratios, tokens and model names as text (probabilities without underflow)
    sampling     the model and sampling distributions, top-k / top-p, draws (float64 log space)
    decoding     result types (Sample, Step), the KV cache, generate() and one-pass score()
    beams        beam search and its report
    hf           the Hugging Face GPT-2 weight mapping
    tokenizer    GPT-2's BPE, characters, a trained byte-level BPE: one interface
    load         init_from -> a ready model, its tokenizer and the device/dtype setup
    ...          training state, data preparation, eval's pairs, scores and reports, held-out metrics,
                 charts and the HTML report (web/ holds its HTML, JavaScript and CSS)
    server/      serve.py's web server (FastAPI + uvicorn): the JSON API and the OpenAI completions API
"""
