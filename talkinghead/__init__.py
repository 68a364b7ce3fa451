"""talkinghead: few-shot neural talking heads (Zakharov et al. 2019, arXiv 1905.08233)."""

__version__ = "0.1.0"
