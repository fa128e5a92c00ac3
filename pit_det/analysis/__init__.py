"""What the trained detectors do and how they compare (docs/analysis.md), the library side of
``tools/analysis/``: Table 5 from metrics and benchmark files (:mod:`.table5`), where deformable
attention samples (:mod:`.sampling`), the backbones' attention entropy and distance
(:mod:`.attention`), and their figures (:mod:`.plots`, which imports matplotlib on first use).
Import the submodules: this package's ``__init__`` imports none of them."""
