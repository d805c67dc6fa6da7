"""Evaluation that reproduces the official DAVIS toolkit (J, F, their recall and decay), the DAVIS
semi-supervised and unsupervised protocols (and the RVOS paper's first-frame matching), YouTube-VOS
seen/unseen scoring and the HS2S analyses.

Typical use::

    from vidseg.evaluation import evaluate
    result = evaluate("DAVIS", "results/my-method", task="semi-supervised", jobs=2)
    print(result.global_metrics["J&F-Mean"])

or on arrays without files: ``evaluate_sequence_arrays(gt, pred, task="semi-supervised")``.
"""

from vidseg.evaluation.analyses import length_analysis, occlusion_analysis, run_analyses
from vidseg.evaluation.jobs import DATASETS, evaluate
from vidseg.evaluation.metrics import (
    boundary_radius,
    decay_bin_edges,
    disk,
    f_measure,
    jaccard,
    seg2bmap,
    statistics,
)
from vidseg.evaluation.report import (
    format_global_table,
    format_sequence_table,
    write_report,
)
from vidseg.evaluation.results import (
    GLOBAL_KEYS,
    STAT_KEYS,
    EvaluationResult,
    ObjectResult,
    SequenceResult,
    global_metrics,
)
from vidseg.evaluation.scoring import (
    MATCHINGS,
    MAX_PROPOSALS,
    TASKS,
    evaluate_sequence_arrays,
)

__all__ = [
    "DATASETS",
    "GLOBAL_KEYS",
    "MATCHINGS",
    "MAX_PROPOSALS",
    "STAT_KEYS",
    "TASKS",
    "EvaluationResult",
    "ObjectResult",
    "SequenceResult",
    "boundary_radius",
    "decay_bin_edges",
    "disk",
    "evaluate",
    "evaluate_sequence_arrays",
    "f_measure",
    "format_global_table",
    "format_sequence_table",
    "global_metrics",
    "jaccard",
    "length_analysis",
    "occlusion_analysis",
    "run_analyses",
    "seg2bmap",
    "statistics",
    "write_report",
]
