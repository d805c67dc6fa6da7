"""Training: the method-agnostic engine (:mod:`~vidseg.training.engine`), the adapter contract each method
implements (:mod:`~vidseg.training.adapter`), the S2S family's adapter (:mod:`~vidseg.training.recurrent`),
data streams and validation. Inference never imports this package."""
