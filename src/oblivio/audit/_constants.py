"""Names the audit command line needs before anything heavy is imported."""

FEATURES = ("direct_diff", "sorted_diff", "euclidean", "direct_concat", "sorted_concat")
"""The five feature constructions of Chen et al. (Sec. 3.3; code names ``direct_diff``,
``sorted_diff``, ``l2_distance``, ``direct_concat``, ``sorted_concat``)."""

CLASSIFIERS = ("dt", "rf", "lr", "mlp")
"""Attack classifiers with the reference's hyper-parameters (``make_attack_classifier``)."""

SETTINGS = ("in_out", "multi_version", "in_in", "online", "null")
"""Unlearning settings of ``collect_posteriors``."""
