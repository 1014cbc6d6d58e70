"""Experiments, the orchestration of the layers below: one run of a recipe (`runner`), a comparison's
runs (`sweep`), layer-wise probes and freeze-depth advice (`probe`) and the demo (`demo`).
"""
