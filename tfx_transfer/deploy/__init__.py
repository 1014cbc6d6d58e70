"""Using a trained model: scores and decisions on new images (`predict`), exports checked by a parity
gate (`export`, `parity`), and a new site's threshold (`recalibrate`).
"""
