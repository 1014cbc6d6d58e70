"""Reports, TensorFlow-free: Markdown and self-contained HTML (`render`), one run's report
(`report`, its pages in `run_page`), comparisons of strategies x sizes with a verdict
(`comparison`), the results page (`results`) and the probe's report (`probe_page`).

They read run folders (`tfx_transfer.runs`) and never import TensorFlow, so `tfx-transfer report`
rebuilds any report on a machine without it.
"""
