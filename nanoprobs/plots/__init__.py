"""
Every chart of the project, drawn with matplotlib, one module per thing drawn (import the module you need:
`from nanoprobs.plots import steps`). matplotlib is imported by these modules only, and only when a
chart is drawn. Nothing here runs a model: scripts collect the numbers first (generate()/score()
details, eval results, training logs) and hand them over; text for labels comes from nanoprobs.formatting.

    common      matplotlib, saving PNGs, windows shown last, shared colours
    steps       sample.py's per-step bar charts, the process pool that draws them, the step viewer
    overview    sample.py's per-sample overview and the temperature comparison
    evals       eval.py's per-pair probabilities and the tokens that gained or lost
    internals   attention maps, the logit lens, token embeddings (tools/attention, logit_lens, embeddings)
    training    loss curves: train.py, tools/compare_tokenizers.py, tools/sweep.py
"""
