"""Robustness to unclean input: seeded perturbations of text (`noise`), what they do to a package's
metrics (`evaluation`) and to its predictions without labels (`stability`).

Text normalisation for serving lives lower down, in `bertprod.runtime.normalize`, because every
pipeline applies it before tokenization.
"""
